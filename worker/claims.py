"""The claim protocol: who renders a clip, for how long, and how it ends. Every change is logged.

A worker claims a clip with a conditional update (compare-and-swap on status and lease token), renews its
lease while it works, and completes or fails the clip only while it still holds that lease. So a late or
duplicate attempt never overwrites a finished clip, and a clip whose worker died is taken back by
`reconcile` once the lease expires.

Each change is one UPDATE that also says who made it and why (`changed_by`, `change_note`); the database's
trigger turns that into the clip_events row. So the worker's claim and completion are one statement each,
which it runs on an autocommit connection (farm.db.autocommit); the other callers pass a Session.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Connection,
    CursorResult,
    DateTime,
    String,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from farm.db import utcnow
from farm.models import Clip, ClipEvent, ClipStatus, FarmSetting, WorkerRecord

RECONCILER = "reconciler"
# Core tables: the hot-path updates skip the ORM's bulk-update bookkeeping (a third of a claim's CPU).
CLIPS = cast(Table, Clip.__table__)
WORKERS = cast(Table, WorkerRecord.__table__)
EVENTS = cast(Table, ClipEvent.__table__)
FAILS_PER_WORKER = 2  # a worker that failed a clip this often does not get it again

Db = Session | Connection  # a transaction, or an autocommit connection for one-statement changes


class Refusal(StrEnum):
    """Why a delivery did not lead to a claim. The message is dropped in every case: the database still says
    what must happen, and `reconcile` sends a new message for any queued clip that has none."""

    UNKNOWN = "no such clip"
    TAKEN = "another worker holds its lease"
    OVER = "it is already done or failed"
    EXCLUDED = "this worker failed it twice already"
    NO_TAKER = "every live worker failed it twice, so it is failed now"
    PAUSED = "the farm is paused"


@dataclass(frozen=True)
class Lease:
    clip_id: int
    token: str
    spec: dict[str, Any]
    attempt: int


def is_paused(session: Session) -> bool:
    return session.scalar(select(PAUSED)) == "1"


def set_paused(session: Session, paused: bool) -> None:
    session.merge(FarmSetting(key="paused", value="1" if paused else "0", updated_at=utcnow()))


# The worker's statements are built once, with bound parameters: building them per call cost more CPU than
# the database spent running them.
NOW = bindparam("now", type_=DateTime(timezone=True))
HELD = and_(  # still running under this lease: the condition for every change its holder makes
    CLIPS.c.id == bindparam("clip"),
    CLIPS.c.lease_token == bindparam("token"),
    CLIPS.c.status == ClipStatus.RUNNING,
)


def _failures_by(worker: Any) -> Any:
    """How often `worker` gave the clip back after an error (the reconciler's take-backs do not count)."""
    return (
        select(func.count(EVENTS.c.id))
        .where(
            EVENTS.c.clip_id == bindparam("clip"),
            EVENTS.c.worker == worker,
            EVENTS.c.from_status == ClipStatus.RUNNING,
            EVENTS.c.to_status.in_((ClipStatus.QUEUED, ClipStatus.FAILED)),
        )
        .scalar_subquery()
    )


FAILURES_BY = _failures_by(bindparam("by"))  # this worker's
PAUSED = select(FarmSetting.value).where(FarmSetting.key == "paused").scalar_subquery()  # "1" when paused
CLAIM = (
    update(CLIPS)
    .where(
        CLIPS.c.id == bindparam("clip"),
        or_(
            CLIPS.c.status == ClipStatus.QUEUED,
            and_(CLIPS.c.status == ClipStatus.RUNNING, CLIPS.c.lease_expires_at < NOW),
        ),
        PAUSED.is_distinct_from("1"),
        or_(CLIPS.c.attempts < FAILS_PER_WORKER, FAILURES_BY < FAILS_PER_WORKER),
    )
    .values(
        status=ClipStatus.RUNNING,
        lease_token=bindparam("token"),
        lease_expires_at=bindparam("expires", type_=DateTime(timezone=True)),
        attempts=CLIPS.c.attempts + 1,
        worker=bindparam("by"),
        started_at=NOW,
        updated_at=NOW,
        changed_by=bindparam("by"),
        change_note=literal("attempt ") + sql_cast(CLIPS.c.attempts + 1, String),
    )
    .returning(CLIPS.c.spec, CLIPS.c.attempts)
)
RENEW = (
    update(CLIPS)
    .where(HELD)
    .values(lease_expires_at=bindparam("expires", type_=DateTime(timezone=True)), updated_at=NOW)
)
COMPLETE = (
    update(CLIPS)
    .where(HELD)
    .values(
        status=ClipStatus.DONE,
        lease_token=None,
        lease_expires_at=None,
        finished_at=NOW,
        updated_at=NOW,
        output_uri=bindparam("uri"),
        frames_done=bindparam("frames"),
        checksums=bindparam("files", type_=JSON),
        render_seconds=bindparam("seconds"),
        qc=bindparam("qc", type_=JSON(none_as_null=True)),
        frames_with_body=bindparam("body"),
        error=None,
        changed_by=bindparam("by"),
        change_note=bindparam("note"),
    )
)
# A clip that no live worker may take is failed rather than left queued for nobody: it is still queued as
# read, and no other worker with a heartbeat since `alive_since` (a lease length ago) has failed it less than
# twice.
NO_TAKER_NOTE = f"no live worker may take it: each failed it {FAILS_PER_WORKER} times"
OTHER_TAKER = select(WORKERS.c.name).where(
    WORKERS.c.name != bindparam("by"),
    WORKERS.c.last_seen_at >= bindparam("alive_since", type_=DateTime(timezone=True)),
    _failures_by(WORKERS.c.name) < FAILS_PER_WORKER,
)
FAIL_UNTAKEN = (
    update(CLIPS)
    .where(
        CLIPS.c.id == bindparam("clip"),
        CLIPS.c.status == ClipStatus.QUEUED,
        CLIPS.c.attempts == bindparam("read_attempts"),
        ~OTHER_TAKER.exists(),
    )
    .values(
        status=ClipStatus.FAILED,
        updated_at=NOW,
        error=bindparam("error"),
        changed_by=bindparam("by"),
        change_note=literal(NO_TAKER_NOTE),
    )
)
HEARTBEAT = update(WORKERS).where(WORKERS.c.name == bindparam("by")).values(last_seen_at=NOW)


def heartbeat(db: Db, worker: str, device: str) -> None:
    """Record that `worker` is alive, for the dashboard: one UPDATE after the first."""
    now = utcnow()
    if not _changed(db.execute(HEARTBEAT, {"by": worker, "now": now})):
        hostname = worker.split("@", 1)[-1] if "@" in worker else socket.gethostname()
        db.execute(
            insert(WORKERS).values(
                name=worker, hostname=hostname, device=device, started_at=now, last_seen_at=now
            )
        )


def claim(db: Db, clip_id: int, worker: str, lease: timedelta) -> Lease | Refusal:
    """Take the clip if it is queued (or its lease has expired), the farm is not paused, and this worker has
    not failed it twice. One conditional UPDATE; only when it matches nothing is the clip read to say why."""
    now = utcnow()
    token = uuid.uuid4().hex
    row = db.execute(
        CLAIM, {"clip": clip_id, "now": now, "token": token, "expires": now + lease, "by": worker}
    ).one_or_none()
    if row is None:
        return _refusal(db, clip_id, worker, now, lease)
    return Lease(clip_id, token, row.spec, row.attempts)


def renew(db: Db, lease: Lease, duration: timedelta) -> bool:
    """Extend the lease; False if it was lost (expired and taken back, or the clip ended)."""
    now = utcnow()
    return _changed(db.execute(RENEW, {**_holder(lease), "now": now, "expires": now + duration}))


def complete(
    db: Db,
    lease: Lease,
    worker: str,
    output_uri: str,
    frames: int,
    checksums: dict[str, dict[str, Any]],
    render_seconds: float,
    qc: dict[str, Any] | None = None,
) -> bool:
    """Mark the clip done, once, and only by the holder of its lease (after all its files are stored and its
    content passed the quality gate, whose statistics `qc` are kept with it)."""
    body = qc.get("frames_with_body") if qc else None
    values = {
        "uri": output_uri,
        "frames": frames,
        "files": checksums,
        "seconds": render_seconds,
        "qc": qc,
        "body": body,
    }
    note = f"{frames} frames"
    return _changed(
        db.execute(COMPLETE, {**_holder(lease), **values, "now": utcnow(), "by": worker, "note": note})
    )


def fail(db: Db, lease: Lease, worker: str, error: str, max_attempts: int) -> str | None:
    """Give the clip back after an error: queued again, or failed for good after `max_attempts`.

    Returns the new status, or None if the lease was already lost (nothing changes then).
    """
    return _give_back(
        db, lease.clip_id, lease.token, lease.attempt, max_attempts, error, worker, f"error: {error[:500]}"
    )


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
        reason = f"worker {lost_worker} stopped renewing its lease (attempt {attempts})"
        new = _give_back(
            session, clip_id, token, attempts, max_attempts, reason, RECONCILER, f"lease expired: {reason}"
        )
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
            .values(
                status=ClipStatus.QUEUED,
                attempts=0,
                updated_at=utcnow(),
                changed_by=None,
                change_note="retry requested",
            )
        )
    return ids


def _give_back(
    db: Db, clip_id: int, token: str | None, attempt: int, max_attempts: int, error: str, by: str, note: str
) -> str | None:
    """End a running clip's lease after an error (`fail`) or its expiry (`take_back_expired`): queued again, or
    failed for good after `max_attempts`. Returns the new status, or None if that lease no longer held it."""
    new = ClipStatus.FAILED if attempt >= max_attempts else ClipStatus.QUEUED
    changed = _changed(
        db.execute(
            update(CLIPS)
            .where(HELD)
            .values(
                status=new,
                lease_token=None,
                lease_expires_at=None,
                updated_at=utcnow(),
                error=error[:2000],
                changed_by=by,
                change_note=note,
            ),
            {"clip": clip_id, "token": token},
        )
    )
    return new if changed else None


def _refusal(db: Db, clip_id: int, worker: str, now: datetime, lease: timedelta) -> Refusal:
    """Why the claim matched nothing, read after the fact (it is the rare path: duplicates and races).

    A queued clip this worker may not take, that no other live worker may take either, is failed here with
    its last error: otherwise it would wait in the queue for nobody, and nothing would say why."""
    row = db.execute(
        select(
            CLIPS.c.status, CLIPS.c.lease_expires_at, CLIPS.c.attempts, PAUSED, FAILURES_BY, CLIPS.c.error
        ).where(CLIPS.c.id == bindparam("clip")),
        {"clip": clip_id, "by": worker},
    ).one_or_none()
    if row is None:
        return Refusal.UNKNOWN
    status, expires, attempts, paused, failures, error = row
    expired = status == ClipStatus.RUNNING and expires is not None and _aware(expires) < now
    if status == ClipStatus.RUNNING and not expired:
        return Refusal.TAKEN
    if status != ClipStatus.QUEUED and not expired:
        return Refusal.OVER
    if paused == "1":
        return Refusal.PAUSED
    if attempts >= FAILS_PER_WORKER and failures >= FAILS_PER_WORKER:
        if status == ClipStatus.QUEUED and _changed(
            db.execute(
                FAIL_UNTAKEN,
                {
                    "clip": clip_id,
                    "read_attempts": attempts,
                    "by": worker,
                    "now": now,
                    "alive_since": now - lease,
                    "error": f"{(error or 'unknown')[:1800]}; {NO_TAKER_NOTE}",
                },
            )
        ):
            return Refusal.NO_TAKER
        return Refusal.EXCLUDED
    return Refusal.TAKEN  # it changed between the update and this read: another worker was quicker


def _changed(result: Any) -> bool:
    """Whether a conditional UPDATE of one row matched (the compare-and-swap succeeded)."""
    return cast(CursorResult[Any], result).rowcount == 1


def _holder(lease: Lease) -> dict[str, Any]:
    """The parameters of HELD for this lease."""
    return {"clip": lease.clip_id, "token": lease.token}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
