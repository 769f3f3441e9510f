"""The Celery task: claim a clip, render it, store its files, and mark it done, in that order.

`process_clip` holds the protocol and takes the renderer and the storage as arguments, so it can be driven by
the Celery task here, by the demo, and by benchmarks with stand-ins.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from farm.celery_app import RENDER_TASK, celery_for, send_render_tasks
from farm.db import session_scope
from farm.settings import Settings, get_settings
from farm.spec import ClipSpec
from worker import claims

log = logging.getLogger(__name__)

# Makes a clip's files in a folder: returns their paths (relative to the folder) and the frame count.
Producer = Callable[[ClipSpec, Path], tuple[list[Path], int]]


@dataclass
class WorkerContext:
    settings: Settings
    name: str
    produce: Producer
    storage: Any  # farm.storage.Storage
    device: str = "cpu"
    outcomes: list[str] = field(default_factory=list)


class LeaseKeeper(threading.Thread):
    """Renews the lease every third of its length while the clip is being made; notes when it is lost."""

    def __init__(self, ctx: WorkerContext, lease: claims.Lease) -> None:
        super().__init__(daemon=True, name=f"lease-{lease.clip_id}")
        self.ctx, self.lease = ctx, lease
        self.duration = timedelta(seconds=ctx.settings.lease_seconds)
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(self.duration.total_seconds() / 3):
            try:
                with session_scope(self.ctx.settings.database_url) as session:
                    self.lost = not claims.renew(session, self.lease, self.duration)
                    claims.heartbeat(session, self.ctx.name, self.ctx.device, self.lease.clip_id)
            except Exception:  # a database hiccup: try again at the next beat, the lease still has time
                log.warning("could not renew the lease of clip %s", self.lease.clip_id, exc_info=True)
            if self.lost:
                return

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join()


def store_files(storage: Any, folder: Path, files: list[Path], prefix: str) -> dict[str, dict[str, Any]]:
    """Upload every file under `prefix`; returns {key: {"sha256", "size"}} for the clip's row."""
    checksums = {}
    for relative in files:
        key = f"{prefix}/{relative.as_posix()}"
        info = storage.put_file(folder / relative, key)
        checksums[key] = {"sha256": info.sha256, "size": info.size}
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
            if keeper.lost:
                return "lost lease"
            checksums = store_files(ctx.storage, Path(tmp), files, spec.output_dir)
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


# --- the Celery side ---------------------------------------------------------------------------------------

app = celery_for(get_settings())
_context: WorkerContext | None = None


def worker_context() -> WorkerContext:
    """One per worker process, made at its first clip: the warm renderer lives as long as the process."""
    global _context
    if _context is None:
        from farm.storage import open_storage

        from worker.produce import blender_producer

        settings = get_settings()
        name = f"{os.environ.get('FARM_WORKER_NAME') or socket.gethostname()}:{os.getpid()}"
        _context = WorkerContext(
            settings, name, blender_producer(settings), open_storage(settings), settings.device
        )
    return _context


@app.task(name=RENDER_TASK)
def render_clip(clip_id: int) -> str:
    return process_clip(clip_id, worker_context())
