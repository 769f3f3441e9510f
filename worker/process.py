"""One clip's life in a worker: claim it, make its files, store them, and mark it done, in that order.

`process_clip` takes what makes the files and the storage as arguments, so the Celery task (worker/tasks.py)
runs it with Blender, and benchmarks run it with stand-ins.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from farm.celery_app import celery_for, send_render_tasks
from farm.db import session_scope
from farm.settings import Settings
from farm.spec import ClipSpec
from worker import claims

log = logging.getLogger(__name__)

# Makes a clip's files in a folder laid out like the storage root (so under spec.output_dir): returns their
# paths relative to the folder and the clip's frame count.
Producer = Callable[[ClipSpec, Path], tuple[list[Path], int]]


@dataclass
class WorkerContext:
    settings: Settings
    name: str
    produce: Producer
    storage: Any  # farm.storage.Storage
    device: str = "cpu"


class LeaseKeeper(threading.Thread):
    """Renews the lease every third of its length while the clip is being made; notes when it is lost."""

    def __init__(self, ctx: WorkerContext, lease: claims.Lease) -> None:
        super().__init__(daemon=True, name=f"lease-{lease.clip_id}")
        self.ctx, self.lease = ctx, lease
        self.duration = timedelta(seconds=ctx.settings.lease_seconds)
        self.stopped = threading.Event()
        self.lost = False
        self.renewed_at = time.monotonic()  # the claim itself

    def renew(self) -> bool:
        """Renew now; False once the lease is lost (it expired and was taken back, or the clip ended)."""
        if not self.lost:
            with session_scope(self.ctx.settings.database_url) as session:
                self.lost = not claims.renew(session, self.lease, self.duration)
                claims.heartbeat(session, self.ctx.name, self.ctx.device, self.lease.clip_id)
            self.renewed_at = time.monotonic()
        return not self.lost

    def still_held(self) -> bool:
        """True if the lease is surely still ours: renewed within the last third of its length, or renewed now."""
        if not self.lost and time.monotonic() - self.renewed_at < self.duration.total_seconds() / 3:
            return True
        return self.renew()

    def run(self) -> None:
        while not self.stopped.wait(self.duration.total_seconds() / 3):
            try:
                if not self.renew():
                    return
            except Exception:  # a database hiccup: try again at the next beat, the lease still has time
                log.warning("could not renew the lease of clip %s", self.lease.clip_id, exc_info=True)

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()


def store_files(storage: Any, folder: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """Upload every file under its path relative to `folder`, which mirrors the storage root.

    Returns {key: {"sha256", "size"}} for the clip's row.
    """
    checksums = {}
    for relative in files:
        info = storage.put_file(folder / relative, relative.as_posix())
        checksums[relative.as_posix()] = {"sha256": info.sha256, "size": info.size}
    return checksums


def process_clip(clip_id: int, ctx: WorkerContext) -> str:
    """Render one clip exactly once. Returns what happened: done, failed, queued (to retry), or a refusal."""
    settings = ctx.settings
    lease_length = timedelta(seconds=settings.lease_seconds)
    with session_scope(settings.database_url) as session:
        lease = claims.claim(session, clip_id, ctx.name, lease_length)
        claims.heartbeat(session, ctx.name, ctx.device, clip_id if isinstance(lease, claims.Lease) else None)
    if isinstance(lease, claims.Refusal):
        log.info("clip %s not taken: %s", clip_id, lease.value)
        return f"skipped: {lease.value}"

    spec = ClipSpec.model_validate(lease.spec)
    started = time.monotonic()
    try:
        with LeaseKeeper(ctx, lease) as keeper, tempfile.TemporaryDirectory(prefix=f"{spec.name}-") as tmp:
            files, frames = ctx.produce(spec, Path(tmp))
            # Objects are replaced by key, so only the lease holder may upload: a worker that stalled past
            # its lease must not overwrite the files of a clip another worker has finished since.
            if not keeper.still_held():
                return "lost lease"
            checksums = store_files(ctx.storage, Path(tmp), files)
        with session_scope(settings.database_url) as session:
            done = claims.complete(
                session,
                lease,
                ctx.name,
                ctx.storage.uri(spec.output_dir),
                frames,
                checksums,
                time.monotonic() - started,
            )
            claims.heartbeat(session, ctx.name, ctx.device, None, done=int(done))
        return "done" if done else "lost lease"
    except (Exception, SoftTimeLimitExceeded) as exc:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:1000]
        log.error("clip %s (%s) failed: %s\n%s", clip_id, spec.name, reason, traceback.format_exc())
        with session_scope(settings.database_url) as session:
            state = claims.fail(session, lease, ctx.name, reason, settings.max_attempts)
            claims.heartbeat(session, ctx.name, ctx.device, None)
        if state == "queued":
            send_render_tasks(celery_for(settings), [clip_id])
        return state or "lost lease"
