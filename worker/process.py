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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from farm.celery_app import celery_for, send_render_tasks
from farm.db import autocommit
from farm.settings import Settings
from farm.spec import ClipSpec
from worker import claims

log = logging.getLogger(__name__)

# Makes a clip's files in a folder laid out like the storage root (so under spec.output_dir): returns their
# paths relative to the folder, the clip's frame count, and the quality gate's statistics (worker/qc.py; None
# from a producer that has none). A clip that fails the gate raises, like any other failure.
Producer = Callable[[ClipSpec, Path], tuple[list[Path], int, dict[str, Any] | None]]


# The heartbeat only says a worker is alive (the clips say what it renders and has finished), so it is sent
# at most this often: at 200 short clips a second, one per clip would be a tenth of the database's work.
HEARTBEAT_EVERY_S = 5.0


@dataclass
class WorkerContext:
    settings: Settings
    name: str
    produce: Producer
    storage: Any  # farm.storage.Storage
    device: str = "cpu"
    heartbeat_at: float = float("-inf")  # never yet
    keeper: LeaseKeeper = field(init=False)

    def __post_init__(self) -> None:
        self.keeper = LeaseKeeper(self)

    def heartbeat(self, db: claims.Db, now: bool = False) -> None:
        """Say this worker is alive, if the last heartbeat is older than HEARTBEAT_EVERY_S (or `now`)."""
        if now or time.monotonic() - self.heartbeat_at >= HEARTBEAT_EVERY_S:
            claims.heartbeat(db, self.name, self.device)
            self.heartbeat_at = time.monotonic()


class LeaseKeeper:
    """Renews the lease of the clip this process is making every third of the lease's length, and notes when
    it is lost. One thread per process, started at its first clip: a thread per clip cost as much CPU as the
    claim itself."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.duration = timedelta(seconds=ctx.settings.lease_seconds)
        self.third = ctx.settings.lease_seconds / 3
        self.lease: claims.Lease | None = None
        self.lost = False
        self.renewed_at = 0.0
        self.lock = threading.Lock()  # one renewal at a time, and none once the clip is let go
        self.thread: threading.Thread | None = None

    @contextmanager
    def holding(self, lease: claims.Lease) -> Iterator[LeaseKeeper]:
        """Keep `lease` renewed for the duration of the block."""
        with self.lock:
            self.lease, self.lost, self.renewed_at = lease, False, time.monotonic()  # the claim itself
        if self.thread is None or not self.thread.is_alive():  # none yet, or this process is a fork
            self.thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")
            self.thread.start()
        try:
            yield self
        finally:
            with self.lock:
                self.lease = None

    def renew(self) -> bool:
        """Renew now; False once the lease is lost (it expired and was taken back, or the clip ended)."""
        with self.lock:
            if self.lease is not None and not self.lost:
                with autocommit(self.ctx.settings.database_url) as db:
                    self.lost = not claims.renew(db, self.lease, self.duration)
                    self.ctx.heartbeat(db, now=True)
                self.renewed_at = time.monotonic()
            return self.lease is not None and not self.lost

    def still_held(self) -> bool:
        """True if the lease is surely still ours: renewed within the last third of its length, or renewed now."""
        if not self.lost and time.monotonic() - self.renewed_at < self.third:
            return True
        return self.renew()

    def _run(self) -> None:
        while True:
            time.sleep(self.third / 4)  # so a renewal comes at most a twelfth of the lease late
            lease = self.lease
            if lease is not None and time.monotonic() - self.renewed_at >= self.third:
                try:
                    self.renew()
                except Exception:  # a database hiccup: try again at the next tick, the lease still has time
                    log.warning("could not renew the lease of clip %s", lease.clip_id, exc_info=True)


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
    with autocommit(settings.database_url) as db:
        lease = claims.claim(db, clip_id, ctx.name, lease_length)
        ctx.heartbeat(db)
    if isinstance(lease, claims.Refusal):
        log.info("clip %s not taken: %s", clip_id, lease.value)
        return f"skipped: {lease.value}"

    spec = ClipSpec.model_validate(lease.spec)
    started = time.monotonic()
    try:
        with ctx.keeper.holding(lease) as keeper, tempfile.TemporaryDirectory(prefix=f"{spec.name}-") as tmp:
            files, frames, qc = ctx.produce(spec, Path(tmp))
            # Objects are replaced by key, so only the lease holder may upload: a worker that stalled past
            # its lease must not overwrite the files of a clip another worker has finished since.
            if not keeper.still_held():
                return "lost lease"
            checksums = store_files(ctx.storage, Path(tmp), files)
        with autocommit(settings.database_url) as db:
            done = claims.complete(
                db,
                lease,
                ctx.name,
                ctx.storage.uri(spec.output_dir),
                frames,
                checksums,
                time.monotonic() - started,
                qc,
            )
            ctx.heartbeat(db)
        return "done" if done else "lost lease"
    except (Exception, SoftTimeLimitExceeded) as exc:
        reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:1000]
        log.error("clip %s (%s) failed: %s\n%s", clip_id, spec.name, reason, traceback.format_exc())
        with autocommit(settings.database_url) as db:
            state = claims.fail(db, lease, ctx.name, reason, settings.max_attempts)
            ctx.heartbeat(db)
        if state == "queued":
            send_render_tasks(celery_for(settings), [clip_id])
        return state or "lost lease"
