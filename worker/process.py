"""One clip's life in a worker: claim it, make its files, store them, and mark it done, in that order.

`process_clip` takes what makes the files and the storage as arguments, so the Celery task (worker/tasks.py)
runs it with Blender, and benchmarks run it with stand-ins.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from farm.core.celery_app import celery_for, send_render_tasks
from farm.core.errors import FarmError
from farm.core.settings import Settings
from farm.core.spec import ClipSpec, parse_spec
from farm.core.storage import Storage, Stored
from worker import claims

T = TypeVar("T")

log = logging.getLogger(__name__)

# Makes a clip's files in a folder laid out like the storage root (so under spec.output_dir): returns their
# paths relative to the folder, the clip's frame count, and the quality gate's statistics (worker/qc.py; None
# from a producer that has none). A clip that fails the gate raises, like any other failure.
Producer = Callable[[ClipSpec, Path], tuple[list[Path], int, dict[str, Any] | None]]


# The heartbeat only says a worker is alive (the clips say what it renders and has finished), so it is sent
# at most this often: at 200 short clips a second, one per clip would be a tenth of the database's work.
HEARTBEAT_EVERY_S = 5.0

# A worker process that fails FAST_FAILS clips in a row within FAST_FAIL_WINDOW_S (a broken GPU, a full disk)
# takes no clips for FAST_FAIL_PAUSE_S, twice as long each time it pauses again before it has finished a
# clip (at most FAST_FAIL_PAUSE_MAX_S), so it does not burn every clip's attempts. While paused it hands each
# clip it receives straight back to the queue, unclaimed, and waits PAUSED_HOLD_S before taking the next
# message: re-sending with a countdown and returning at once would pull the whole queue through it.
FAST_FAILS = 3
FAST_FAIL_WINDOW_S = 300.0
FAST_FAIL_PAUSE_S = 300.0
FAST_FAIL_PAUSE_MAX_S = 3600.0
PAUSED_HOLD_S = 10.0


class FastFailGuard:
    """Counts a worker process's failures in a row and says when it must pause (its own clock: only lengths
    of time are measured, never compared with another host's)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.streak: list[float] = []  # when each failure since the last clip done happened
        self.pauses = 0  # pauses since the last clip done: each is twice as long as the one before
        self.until = float("-inf")
        self.reason = ""
        self.announced = False  # a pause is recorded and not yet ended

    def failed(self, error: str) -> float | None:
        """Note a failed clip; returns the pause's length when this failure starts one."""
        now = self.clock()
        self.streak = [t for t in self.streak if now - t < FAST_FAIL_WINDOW_S] + [now]
        if len(self.streak) < FAST_FAILS:
            return None
        seconds = min(FAST_FAIL_PAUSE_S * 2**self.pauses, FAST_FAIL_PAUSE_MAX_S)
        self.pauses += 1
        self.streak = []
        self.until = now + seconds
        self.announced = True
        self.reason = (
            f"failed {FAST_FAILS} clips in a row within {FAST_FAIL_WINDOW_S / 60:g} min (the last: "
            f"{error[:300]}); takes no clips for {seconds / 60:g} min"
        )
        return seconds

    def succeeded(self) -> None:
        self.streak, self.pauses = [], 0

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self.until - self.clock())

    def pause_ended(self) -> bool:
        """True once, at the first look after a pause is over."""
        if self.announced and self.paused_for() == 0:
            self.announced = False
            return True
        return False


@dataclass
class WorkerContext:
    settings: Settings
    name: str
    produce: Producer
    storage: Storage
    device: str = "cpu"
    heartbeat_at: float = float("-inf")  # never yet
    keeper: LeaseKeeper = field(init=False)
    guard: FastFailGuard = field(default_factory=FastFailGuard)

    def __post_init__(self) -> None:
        self.keeper = LeaseKeeper(self)

    def heartbeat(self, db: claims.Db, now: bool = False) -> None:
        """Say this worker is alive, if the last heartbeat is older than HEARTBEAT_EVERY_S (or `now`)."""
        if now or time.monotonic() - self.heartbeat_at >= HEARTBEAT_EVERY_S:
            claims.heartbeat(db, self.name, self.device)
            self.heartbeat_at = time.monotonic()

    def in_database(self, op: Callable[[claims.Db], T]) -> T:
        """Run one of the protocol's statements (and maybe a heartbeat): retried once if the database dropped
        the connection, after waiting up to a lease length for it to come back (claims.once_more)."""
        return claims.once_more(self.settings.database_url, op, self.settings.lease_seconds)


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
            lease = self.lease
            if lease is not None and not self.lost:

                def renew_and_beat(db: claims.Db) -> bool:
                    held = claims.renew(db, lease, self.duration)
                    self.ctx.heartbeat(db, now=True)
                    return held

                self.lost = not self.ctx.in_database(renew_and_beat)
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


def store_files(
    storage: Storage, folder: Path, files: list[Path], keeper: LeaseKeeper
) -> dict[str, dict[str, Any]] | None:
    """Upload every file under its path relative to `folder` (which mirrors the storage root), in order, so
    the manifest (the last file) last. Returns {key: {"sha256", "size"}} for the clip's row, or None as soon
    as the lease is found lost: nothing more is written then.

    The lease is checked before each file, and every write is create-only (Storage.put_new). A key that holds
    other bytes belongs either to a clip another worker finished (so our lease is gone) or to an attempt that
    never completed. Only a worker that has just renewed its lease replaces such an object, and only that very
    object (named by its version): a worker that lost its lease, even one frozen between a check and a write,
    never replaces the files of a clip that is done.
    """
    checksums = {}
    manifest = files[-1].as_posix() if files else ""
    cleared = False
    for relative in files:
        key = relative.as_posix()
        if not keeper.still_held():
            return None
        result = storage.put_new(folder / relative, key)
        for _ in range(REPLACE_TRIES):
            if not isinstance(result, Stored):
                break
            if not keeper.renew():  # a fresh check: the object may be a finished clip's
                return None
            if not cleared and key != manifest:
                # An unfinished attempt's files are here. Its manifest goes first, so the folder does not
                # claim to be a complete clip while they are replaced.
                stale = storage.head(manifest)
                if stale is not None:
                    storage.delete(manifest, version=stale.version)
                cleared = True
            result = storage.put_new(folder / relative, key, replacing=result.version)
        if isinstance(result, Stored):
            raise FarmError(f"{storage.uri(key)} kept changing while this worker was replacing it")
        checksums[key] = {"sha256": result.sha256, "size": result.size}
    return checksums


REPLACE_TRIES = 3
LOW_SPACE = 1 << 20  # a scratch folder with less free space than this is full for a clip's files


def produce_files(
    ctx: WorkerContext, spec: ClipSpec, folder: Path
) -> tuple[list[Path], int, dict[str, Any] | None]:
    """ctx.produce, with a full scratch folder said in one sentence (whatever failed on it: a write, ffmpeg,
    the pipe to a dead ffmpeg)."""
    try:
        return ctx.produce(spec, folder)
    except Exception as exc:
        sentence = no_space(exc, folder.parent)
        if sentence is None:
            raise
        raise FarmError(sentence) from exc


def scratch_root() -> Path:
    """Where a clip's files are written before they are uploaded: TMPDIR as the user set it (Python's tempfile
    would quietly pass over a full one and write to /tmp instead), else the default temp folder."""
    configured = os.environ.get("TMPDIR")
    return Path(configured) if configured and os.path.isdir(configured) else Path(tempfile.gettempdir())


@contextmanager
def scratch_folder(spec: ClipSpec) -> Iterator[str]:
    """A temporary folder for the clip's files, in scratch_root(); a full disk there is said in one sentence."""
    root = scratch_root()
    try:
        folder = tempfile.TemporaryDirectory(prefix=f"{spec.name}-", dir=root)
    except OSError as exc:
        sentence = no_space(exc, root)
        if sentence is None:
            raise
        raise FarmError(sentence) from exc
    with folder as name:
        yield name


def no_space(exc: BaseException, scratch: Path) -> str | None:
    """The one sentence for a failure caused by a full disk (the scratch folder's, or another named one),
    else None."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    said = [
        e for e in chain if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in str(e)
    ]
    try:
        st = os.statvfs(scratch)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    if free is not None and (free < LOW_SPACE or (said and free < 64 * LOW_SPACE)):
        return (
            f"no space left on device in the scratch folder {scratch} ({free / 1e6:.1f} MB free), "
            "where the worker writes a clip's files before uploading them; free space there or set TMPDIR "
            "to a folder with room"
        )
    named = [e.filename for e in said if isinstance(e, OSError) and e.filename]
    if named:
        return f"no space left on device writing {named[0]}; free space on that disk"
    return None


def process_clip(clip_id: int, ctx: WorkerContext) -> str:
    """Render one clip exactly once. Returns what happened: done, failed, queued (to retry), or a refusal."""
    settings = ctx.settings
    if ctx.guard.paused_for() > 0:
        return hand_back(clip_id, ctx)
    if ctx.guard.pause_ended():
        log.warning("worker %s takes clips again after its pause", ctx.name)
        ctx.in_database(lambda db: claims.pause_worker(db, ctx.name, None))
    lease_length = timedelta(seconds=settings.lease_seconds)
    token = uuid.uuid4().hex  # the same in a retry, which so recognises a claim whose reply was lost

    def take(db: claims.Db) -> claims.Lease | claims.Refusal:
        lease = claims.claim(db, clip_id, ctx.name, lease_length, token)
        ctx.heartbeat(db)
        return lease

    lease = ctx.in_database(take)
    if isinstance(lease, claims.Refusal):
        log.info("clip %s not taken: %s", clip_id, lease.value)
        return f"skipped: {lease.value}"

    started = time.monotonic()
    spec: ClipSpec | None = None
    tmp: str | None = None
    try:
        spec = parse_spec(lease.spec)  # a bad name (say '../x') must not reach the scratch folder or the keys
        log.info(
            "clip %s (%s, %d frames, attempt %d) starts on %s",
            clip_id, spec.name, spec.frame_count, lease.attempt, ctx.name,
        )  # fmt: skip
        with ctx.keeper.holding(lease) as keeper, scratch_folder(spec) as tmp:
            files, frames, qc = produce_files(ctx, spec, Path(tmp))
            stored = store_files(ctx.storage, Path(tmp), files, keeper)
            if stored is None:
                return "lost lease"  # nothing more was written: the clip is another worker's now
            checksums = stored
        seconds = time.monotonic() - started
        uri = ctx.storage.uri(spec.output_dir)

        def finish(db: claims.Db) -> bool:
            done = claims.complete(db, lease, ctx.name, uri, frames, checksums, seconds, qc)
            ctx.heartbeat(db)
            return done

        if not ctx.in_database(finish):
            log.warning(
                "clip %s (%s) rendered but its lease was lost: another worker has it", clip_id, spec.name
            )
            return "lost lease"
        ctx.guard.succeeded()
        log.info(
            "clip %s (%s) done: %d frames in %.1f s, stored at %s", clip_id, spec.name, frames, seconds, uri
        )
        return "done"
    except (Exception, SoftTimeLimitExceeded) as exc:
        reason = failure_reason(exc, spec, tmp)
        log.error(
            "clip %s (%s) failed after %.1f s: %s\n%s",
            clip_id, spec.name if spec else "?", time.monotonic() - started, reason, traceback.format_exc(),
        )  # fmt: skip

        def give_back(db: claims.Db) -> str | None:
            state = claims.fail(db, lease, ctx.name, reason, settings.max_attempts)
            ctx.heartbeat(db)
            return state

        state = ctx.in_database(give_back)
        if state == "queued":  # offered again after a delay that grows with each failed attempt
            delay = claims.retry_delay(lease.attempt, settings.retry_delay_s)
            send_render_tasks(celery_for(settings), [clip_id], countdown=delay)
        pause = ctx.guard.failed(reason)
        if pause is not None:
            log.warning("worker %s pauses: it %s", ctx.name, ctx.guard.reason)
            ctx.in_database(lambda db: claims.pause_worker(db, ctx.name, pause, ctx.guard.reason))
        return state or "lost lease"


def failure_reason(exc: BaseException, spec: ClipSpec | None, scratch: str | None) -> str:
    """The clip row's error, in one line. The row says which clip it is, so its name and scratch folder are
    left out: equal causes then read the same and group together (/api/failures, `farm status`)."""
    reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    if scratch:
        reason = reason.replace(scratch, "<scratch>")
    if spec is not None:
        reason = reason.replace(spec.name, "<clip>")
    return reason[:1000]


def hand_back(clip_id: int, ctx: WorkerContext) -> str:
    """A paused worker's delivery: the clip goes straight back to the queue unclaimed (no attempt is spent),
    for another worker; this process then waits a little before it takes its next message."""
    left = ctx.guard.paused_for()
    send_render_tasks(celery_for(ctx.settings), [clip_id])
    ctx.in_database(ctx.heartbeat)  # still alive, and shown paused
    log.info("clip %s handed back unclaimed: this worker %s (%.0f s left)", clip_id, ctx.guard.reason, left)
    time.sleep(min(left, PAUSED_HOLD_S))
    return f"skipped: this worker is paused ({ctx.guard.reason})"
