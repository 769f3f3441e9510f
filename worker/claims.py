"""The claim protocol: who renders a clip, for how long, and how it ends. Every change is logged.

A worker claims a clip with a conditional update (compare-and-swap on status and lease token), renews its
lease while it works, and completes or fails the clip only while it still holds that lease. So a late or
duplicate attempt never overwrites a finished clip, and a clip whose worker died is taken back by
`reconcile` once the lease expires.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, Table, func, insert, select, update
from sqlalchemy.orm import Session

from farm.db import utcnow
from farm.models import Clip, ClipEvent, ClipStatus, FarmSetting, WorkerRecord

RECONCILER = "reconciler"
# Core tables: the hot-path updates skip the ORM's bulk-update bookkeeping (a third of a claim's CPU).
CLIPS = cast(Table, Clip.__table__)
WORKERS = cast(Table, WorkerRecord.__table__)
EVENTS = cast(Table, ClipEvent.__table__)
FAILS_PER_WORKER = 2  # a worker that failed a clip this often does not get it again


class Refusal(StrEnum):
    """Why a delivery did not lead to a claim. The message is dropped in every case: the database still says
    what must happen, and `reconcile` sends a new message for any queued clip that has none."""

    UNKNOWN = "no such clip"
    TAKEN = "another worker holds its lease"
    OVER = "it is already done or failed"
    EXCLUDED = "this worker failed it twice already"
    PAUSED = "the farm is paused"


@dataclass(frozen=True)
class Lease:
    clip_id: int
    token: str
    spec: dict[str, Any]
    attempt: int


def log(
    session: Session, clip_id: int, old: str | None, new: str, worker: str | None, detail: str | None
) -> None:
    session.execute(
        insert(EVENTS).values(
            clip_id=clip_id, at=utcnow(), from_status=old, to_status=new, worker=worker, detail=detail
        )
    )


def is_paused(session: Session) -> bool:
    setting = session.get(FarmSetting, "paused")
    return setting is not None and setting.value == "1"


def set_paused(session: Session, paused: bool) -> None:
    session.merge(FarmSetting(key="paused", value="1" if paused else "0", updated_at=utcnow()))


def heartbeat(session: Session, worker: str, device: str, clip_id: int | None, done: int = 0) -> None:
    """Record that `worker` is alive (and what it works on) for the dashboard: one UPDATE, after the first."""
    now = utcnow()
    values = {"last_seen_at": now, "current_clip_id": clip_id, "clips_done": WORKERS.c.clips_done + done}
    if not _update_one(session, update(WORKERS).where(WORKERS.c.name == worker).values(**values)):
        hostname = worker.split("@", 1)[-1] if "@" in worker else socket.gethostname()
        session.add(
            WorkerRecord(
                name=worker, hostname=hostname, device=device, started_at=now, last_seen_at=now,
                current_clip_id=clip_id, clips_done=done,
            )
        )  # fmt: skip


def failures_by(session: Session, clip_id: int, worker: str) -> int:
    return (
        session.scalar(
            select(func.count(ClipEvent.id)).where(
                ClipEvent.clip_id == clip_id,
                ClipEvent.worker == worker,
                ClipEvent.from_status == ClipStatus.RUNNING,
                ClipEvent.to_status.in_((ClipStatus.QUEUED, ClipStatus.FAILED)),
            )
        )
        or 0
    )


def claim(session: Session, clip_id: int, worker: str, lease: timedelta) -> Lease | Refusal:
    """Take the clip if it is queued (or its lease has expired)."""
    now = utcnow()
    paused = select(FarmSetting.value).where(FarmSetting.key == "paused").scalar_subquery()
    row = session.execute(
        select(Clip.status, Clip.lease_token, Clip.lease_expires_at, Clip.spec, Clip.attempts, paused).where(
            Clip.id == clip_id
        )
    ).one_or_none()
    if row is None:
        return Refusal.UNKNOWN
    status, old_token, expires, spec, attempts, paused_value = row
    expired = status == ClipStatus.RUNNING and expires is not None and _aware(expires) < now
    if status == ClipStatus.RUNNING and not expired:
        return Refusal.TAKEN
    if status != ClipStatus.QUEUED and not expired:
        return Refusal.OVER
    if paused_value == "1":
        return Refusal.PAUSED
    if attempts >= FAILS_PER_WORKER and failures_by(session, clip_id, worker) >= FAILS_PER_WORKER:
        return Refusal.EXCLUDED
    token = uuid.uuid4().hex
    claimed = _update_one(
        session,
        update(CLIPS)
        .where(CLIPS.c.id == clip_id, CLIPS.c.status == status, _same_token(old_token))
        .values(
            status=ClipStatus.RUNNING,
            lease_token=token,
            lease_expires_at=now + lease,
            attempts=CLIPS.c.attempts + 1,
            worker=worker,
            started_at=now,
            updated_at=now,
        ),
    )
    if not claimed:
        return Refusal.TAKEN  # another worker won the race
    log(session, clip_id, status, ClipStatus.RUNNING, worker, f"attempt {attempts + 1}")
    return Lease(clip_id, token, spec, attempts + 1)


def renew(session: Session, lease: Lease, duration: timedelta) -> bool:
    """Extend the lease; False if it was lost (expired and taken back, or the clip ended)."""
    now = utcnow()
    return _update_one(
        session,
        update(CLIPS).where(*_held(lease)).values(lease_expires_at=now + duration, updated_at=now),
    )


def complete(
    session: Session,
    lease: Lease,
    worker: str,
    output_uri: str,
    frames: int,
    checksums: dict[str, dict[str, Any]],
    render_seconds: float,
) -> bool:
    """Mark the clip done, once, and only by the holder of its lease (after all its files are stored)."""
    now = utcnow()
    done = _update_one(
        session,
        update(CLIPS)
        .where(*_held(lease))
        .values(
            status=ClipStatus.DONE,
            lease_token=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
            output_uri=output_uri,
            frames_done=frames,
            checksums=checksums,
            render_seconds=render_seconds,
            error=None,
        ),
    )
    if done:
        log(session, lease.clip_id, ClipStatus.RUNNING, ClipStatus.DONE, worker, f"{frames} frames")
    return done


def fail(session: Session, lease: Lease, worker: str, error: str, max_attempts: int) -> str | None:
    """Give the clip back after an error: queued again, or failed for good after `max_attempts`.

    Returns the new status, or None if the lease was already lost (nothing changes then).
    """
    new = ClipStatus.FAILED if lease.attempt >= max_attempts else ClipStatus.QUEUED
    changed = _update_one(
        session,
        update(CLIPS)
        .where(*_held(lease))
        .values(status=new, lease_token=None, lease_expires_at=None, updated_at=utcnow(), error=error[:2000]),
    )
    if not changed:
        return None
    log(session, lease.clip_id, ClipStatus.RUNNING, new, worker, f"error: {error[:500]}")
    return new


def take_back_expired(session: Session, max_attempts: int) -> list[int]:
    """Clips whose worker stopped renewing its lease (died, hung, lost the network): queued again, or failed
    after `max_attempts`, since a clip that keeps killing its workers must not loop forever."""
    now = utcnow()
    requeued = []
    rows = session.execute(
        select(Clip.id, Clip.lease_token, Clip.attempts, Clip.worker).where(
            Clip.status == ClipStatus.RUNNING, Clip.lease_expires_at < now
        )
    ).all()
    for clip_id, token, attempts, lost_worker in rows:
        new = ClipStatus.FAILED if attempts >= max_attempts else ClipStatus.QUEUED
        reason = f"worker {lost_worker} stopped renewing its lease (attempt {attempts})"
        changed = _update_one(
            session,
            update(CLIPS)
            .where(CLIPS.c.id == clip_id, CLIPS.c.lease_token == token, CLIPS.c.status == ClipStatus.RUNNING)
            .values(status=new, lease_token=None, lease_expires_at=None, updated_at=now, error=reason),
        )
        if changed:
            log(session, clip_id, ClipStatus.RUNNING, new, RECONCILER, f"lease expired: {reason}")
            if new == ClipStatus.QUEUED:
                requeued.append(clip_id)
    return requeued


def retry_failed(session: Session) -> list[int]:
    """Put every failed clip back in the queue with a fresh attempt count (`farm retry --failed`)."""
    ids = list(session.scalars(select(Clip.id).where(Clip.status == ClipStatus.FAILED)))
    if ids:
        session.execute(
            update(CLIPS)
            .where(CLIPS.c.id.in_(ids), CLIPS.c.status == ClipStatus.FAILED)
            .values(status=ClipStatus.QUEUED, attempts=0, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
        for clip_id in ids:
            log(session, clip_id, ClipStatus.FAILED, ClipStatus.QUEUED, None, "retry requested")
    return ids


def _update_one(session: Session, statement: Any) -> bool:
    """Run a conditional UPDATE of one clip; True if it matched (the compare-and-swap succeeded)."""
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount == 1


def _held(lease: Lease) -> tuple[Any, ...]:
    """The clip is still running under this lease: the condition for every change its holder makes."""
    return (
        CLIPS.c.id == lease.clip_id,
        CLIPS.c.lease_token == lease.token,
        CLIPS.c.status == ClipStatus.RUNNING,
    )


def _same_token(token: str | None) -> Any:
    return CLIPS.c.lease_token.is_(None) if token is None else CLIPS.c.lease_token == token


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
