"""The claim protocol: who renders a clip, for how long, and how it ends. Every change is logged.

A worker claims a clip with a conditional update (compare-and-swap on status and lease token), renews its
lease while it works, and completes or fails the clip only while it still holds that lease. So a late or
duplicate attempt never overwrites a finished clip, and a clip whose worker died is taken back by
`reconcile` once the lease expires.

Every time in the protocol is the database's (`db_now`: now() on PostgreSQL, the same in SQLite), written and
compared inside the statement, with the lease length as a bound number of seconds: a host whose clock is off
neither takes a live lease nor loses its own, and no statement needs a round trip to read the time.

Each change is one UPDATE that also says who made it and why (`changed_by`, `change_note`); the database's
trigger turns that into the clip_events row. So the worker's claim and completion are one statement each,
which it runs on an autocommit connection (`once_more`); the other callers pass a Session. Each of the
worker's statements can be run twice with the same lease token and means the same: a claim, completion or
failure whose reply was lost is recognised by its token, so a dropped connection is retried once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    Connection,
    CursorResult,
    Float,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from farm.core.db import db_now, get_engine, ready_engine, utcnow
from farm.core.models import Clip, ClipEvent, ClipStatus, FarmSetting, WorkerRecord

log = logging.getLogger(__name__)

RECONCILER = "reconciler"
# Core tables: the hot-path updates skip the ORM's bulk-update bookkeeping (a third of a claim's CPU).
CLIPS = cast(Table, Clip.__table__)
WORKERS = cast(Table, WorkerRecord.__table__)
EVENTS = cast(Table, ClipEvent.__table__)
FAILS_PER_HOST = 2  # a host whose attempts at a clip ended without it done this often does not get it again
RETRY_DELAY_MAX_S = 600.0  # the longest wait before a failed clip is offered again

Db = Session | Connection  # a transaction, or an autocommit connection for one-statement changes
T = TypeVar("T")


class Refusal(StrEnum):
    """Why a delivery did not lead to a claim. The message is dropped in every case: the database still says
    what must happen, and `reconcile` sends a new message for any queued clip that has none."""

    UNKNOWN = "no such clip"
    TAKEN = "another worker holds its lease"
    OVER = "it is already done or failed"
    EXCLUDED = "this host failed it twice already, and another live host may take it"
    NO_TAKER = "every live host failed it twice, and it failed on more than one host, so it is failed now"
    PAUSED = "the farm is paused"


@dataclass(frozen=True)
class Lease:
    clip_id: int
    token: str
    spec: dict[str, Any]
    attempt: int


# ---- the worker's statements ------------------------------------------------------------------------------

# Built once, with bound parameters: building them per call cost more CPU than the database spent running them.
LEASE_S = bindparam("lease_s", type_=Float)  # the lease length in seconds
HELD = and_(  # still running under this lease: the condition for every change its holder makes
    CLIPS.c.id == bindparam("clip"),
    CLIPS.c.lease_token == bindparam("token"),
    CLIPS.c.status == ClipStatus.RUNNING,
)
HOST = bindparam("host", type_=String)  # the claiming worker's host (host_of)


def host_of(worker: str) -> str:
    """The host a worker process runs on: its name without the process id (`farm worker` names each pool
    process FARM_WORKER_NAME or the hostname, then `:pid`), so a recycled pool process is the same host."""
    host, _, pid = worker.rpartition(":")
    return host if host and pid.isdigit() else worker


def _on_host(worker: Any, host: Any) -> Any:
    """The worker name `worker` (a column) runs on `host` (an expression): it is the host, or host:pid."""
    return or_(worker == host, func.substr(worker, 1, func.length(host) + 1) == host + literal(":"))


_RESETS = EVENTS.alias("resets")
# Events after the clip's last `farm retry` (failed -> queued) count; the ones before belong to its old life.
SINCE_RETRY = EVENTS.c.id > (
    select(func.coalesce(func.max(_RESETS.c.id), 0))
    .where(
        _RESETS.c.clip_id == bindparam("clip"),
        _RESETS.c.from_status == ClipStatus.FAILED,
        _RESETS.c.to_status == ClipStatus.QUEUED,
    )
    .scalar_subquery()
)
_ATTEMPTS = and_(EVENTS.c.clip_id == bindparam("clip"), EVENTS.c.to_status == ClipStatus.RUNNING, SINCE_RETRY)


def _strikes(host: Any) -> Any:
    """How many of the clip's attempts `host` made. Every attempt that is over while the clip is not done
    ended badly on that host: an error (`fail`), or its worker died or stalled holding it (the lease expired
    and the reconciler or another worker took it back). So deaths count against the host that held it."""
    return select(func.count(EVENTS.c.id)).where(_ATTEMPTS, _on_host(EVENTS.c.worker, host)).scalar_subquery()


# Another host that may still take the clip: a heartbeat within a lease length, fewer than two strikes.
OTHER_TAKER = exists(
    select(WORKERS.c.name).where(
        WORKERS.c.hostname != HOST,
        WORKERS.c.last_seen_at >= db_now(-LEASE_S),
        WORKERS.c.stopped_at.is_(None),
        _strikes(WORKERS.c.hostname) < FAILS_PER_HOST,
    )
)
FAILED_ELSEWHERE = exists(select(EVENTS.c.id).where(_ATTEMPTS, not_(_on_host(EVENTS.c.worker, HOST))))
# A host may take a clip unless it failed it twice while another live host may take it instead. When none
# may, the host takes it again if it is the only one that ever failed it (one machine gives a clip all its
# FARM_MAX_ATTEMPTS; its failures say nothing about the clip against the host); if the clip failed on other
# hosts too, nobody takes it and it is failed (FAIL_UNTAKEN). The first test decides almost every claim.
MAY_TAKE = or_(
    CLIPS.c.attempts < FAILS_PER_HOST,
    _strikes(HOST) < FAILS_PER_HOST,
    and_(not_(OTHER_TAKER), not_(FAILED_ELSEWHERE)),
)
PAUSED = select(FarmSetting.value).where(FarmSetting.key == "paused").scalar_subquery()  # "1" when paused
CLAIM = (
    update(CLIPS)
    .where(
        CLIPS.c.id == bindparam("clip"),
        or_(
            CLIPS.c.status == ClipStatus.QUEUED,
            and_(CLIPS.c.status == ClipStatus.RUNNING, CLIPS.c.lease_expires_at < db_now()),
        ),
        PAUSED.is_distinct_from("1"),
        MAY_TAKE,
    )
    .values(
        status=ClipStatus.RUNNING,
        lease_token=bindparam("token"),
        lease_expires_at=db_now(LEASE_S),
        attempts=CLIPS.c.attempts + 1,
        worker=bindparam("by"),
        started_at=db_now(),
        updated_at=db_now(),
        changed_by=bindparam("by"),
        change_note=literal("attempt ") + sql_cast(CLIPS.c.attempts + 1, String),
    )
    .returning(CLIPS.c.spec, CLIPS.c.attempts)
)
RENEW = update(CLIPS).where(HELD).values(lease_expires_at=db_now(LEASE_S), updated_at=db_now())
# The lease token stays on a clip its holder completed or gave back, so that a retried statement whose first
# run committed recognises its own work (`_own`); the reconciler's take-back clears it.
COMPLETE = (
    update(CLIPS)
    .where(HELD)
    .values(
        status=ClipStatus.DONE,
        lease_expires_at=None,
        finished_at=db_now(),
        updated_at=db_now(),
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
GIVE_BACK = (
    update(CLIPS)
    .where(HELD)
    .values(
        status=bindparam("new"),
        lease_expires_at=None,
        updated_at=db_now(),
        error=bindparam("error"),
        changed_by=bindparam("by"),
        change_note=bindparam("note"),
    )
)
# The reconciler's take-back: one UPDATE of every clip whose lease has expired, checked in the same statement
# that gives it back, so a renewal that comes first keeps its clip.
LOST_BY = (
    literal("worker ")
    + func.coalesce(CLIPS.c.worker, "?")
    + " stopped renewing its lease (attempt "
    + sql_cast(CLIPS.c.attempts, String)
    + ")"
)
TAKE_BACK = (
    update(CLIPS)
    .where(CLIPS.c.status == ClipStatus.RUNNING, CLIPS.c.lease_expires_at < db_now())
    .values(
        status=case((CLIPS.c.attempts >= bindparam("max"), ClipStatus.FAILED), else_=ClipStatus.QUEUED),
        lease_token=None,
        lease_expires_at=None,
        updated_at=db_now(),
        error=LOST_BY,
        changed_by=RECONCILER,
        change_note=literal("lease expired: ") + LOST_BY,
    )
    .returning(CLIPS.c.id, CLIPS.c.status, CLIPS.c.attempts)
)
# A clip that no live host may take is failed rather than left queued for nobody: it is still queued as read,
# this host may not take it, and no other host with a heartbeat within a lease length may either.
NO_TAKER_NOTE = (
    f"no live host may take it: every live host failed it {FAILS_PER_HOST} times, and it failed on more "
    "than one host"
)
FAIL_UNTAKEN = (
    update(CLIPS)
    .where(
        CLIPS.c.id == bindparam("clip"),
        CLIPS.c.status == ClipStatus.QUEUED,
        CLIPS.c.attempts == bindparam("read_attempts"),
        not_(MAY_TAKE),
        not_(OTHER_TAKER),
    )
    .values(
        status=ClipStatus.FAILED,
        updated_at=db_now(),
        error=bindparam("error"),
        changed_by=bindparam("by"),
        change_note=literal(NO_TAKER_NOTE),
    )
)
HEARTBEAT = (
    update(WORKERS).where(WORKERS.c.name == bindparam("by")).values(last_seen_at=db_now(), stopped_at=None)
)
STOPPED = update(WORKERS).where(WORKERS.c.name == bindparam("by")).values(stopped_at=db_now())
# Worker names are host:pid and Celery recycles pool processes, so rows of gone processes pile up (and with
# them /metrics' worker labels): a row silent this long (stopped or dead) is deleted. Clips and clip_events
# keep the worker's name, so their history stays whole.
FORGET_WORKERS_S = 86400.0
FORGET_WORKERS = delete(WORKERS).where(WORKERS.c.last_seen_at < db_now(-FORGET_WORKERS_S))
PAUSE_WORKER = (
    update(WORKERS)
    .where(WORKERS.c.name == bindparam("by"))
    .values(paused_until=db_now(bindparam("pause_s", type_=Float)), pause_reason=bindparam("reason"))
)
UNPAUSE_WORKER = (
    update(WORKERS).where(WORKERS.c.name == bindparam("by")).values(paused_until=None, pause_reason=None)
)


def heartbeat(db: Db, worker: str, device: str) -> None:
    """Record that `worker` is alive, for the dashboard and for FAIL_UNTAKEN: one UPDATE after the first."""
    if not _changed(db.execute(HEARTBEAT, {"by": worker})):
        db.execute(FORGET_WORKERS)  # once per new worker process, which is when rows accumulate
        db.execute(
            insert(WORKERS).values(
                name=worker,
                hostname=host_of(worker),
                device=device,
                started_at=db_now(),
                last_seen_at=db_now(),
            )
        )


def stopped(db: Db, worker: str) -> None:
    """Record that `worker` has shut down: the dashboard shows it gone, and no clip waits for it."""
    db.execute(STOPPED, {"by": worker})


def claim(db: Db, clip_id: int, worker: str, lease: timedelta, token: str | None = None) -> Lease | Refusal:
    """Take the clip if it is queued (or its lease has expired), the farm is not paused, and this worker's host
    may take it (MAY_TAKE). One conditional UPDATE; only when it matches nothing is the clip read to say why.

    Run again with the same `token`, it returns the lease the first run took (when that one's reply was lost).
    """
    token = token or uuid.uuid4().hex
    params = {"clip": clip_id, "token": token, "lease_s": lease.total_seconds(), "by": worker}
    row = db.execute(CLAIM, {**params, "host": host_of(worker)}).one_or_none()
    if row is None:
        return _refusal(db, clip_id, worker, token, lease)
    return Lease(clip_id, token, row.spec, row.attempts)


def renew(db: Db, lease: Lease, duration: timedelta) -> bool:
    """Extend the lease; False if it was lost (expired and taken back, or the clip ended)."""
    return _changed(db.execute(RENEW, {**_holder(lease), "lease_s": duration.total_seconds()}))


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
    content passed the quality gate, whose statistics `qc` are kept with it). True also when this very lease
    completed it already (a retry whose first run committed)."""
    body = qc.get("frames_with_body") if qc else None
    values = {
        "uri": output_uri,
        "frames": frames,
        "files": checksums,
        "seconds": render_seconds,
        "qc": qc,
        "body": body,
    }
    params = {**_holder(lease), **values, "by": worker, "note": f"{frames} frames"}
    return _changed(db.execute(COMPLETE, params)) or _own(db, lease) == ClipStatus.DONE


def fail(db: Db, lease: Lease, worker: str, error: str, max_attempts: int) -> str | None:
    """Give the clip back after an error: queued again, or failed for good after `max_attempts`.

    Returns the new status, or None if the lease was already lost (nothing changes then).
    """
    new = ClipStatus.FAILED if lease.attempt >= max_attempts else ClipStatus.QUEUED
    params = {"new": new, "error": error[:2000], "by": worker, "note": f"error: {error[:500]}"}
    if _changed(db.execute(GIVE_BACK, {**_holder(lease), **params})):
        return new
    own = _own(db, lease)  # this very lease gave it back already (a retry whose first run committed)
    return own if own in (ClipStatus.QUEUED, ClipStatus.FAILED) else None


def take_back_expired(session: Session, max_attempts: int) -> dict[int, int]:
    """Clips whose worker stopped renewing its lease (died, hung, lost the network): queued again, or failed
    after `max_attempts`, since a clip that keeps killing its workers must not loop forever. Expiry is checked
    in the UPDATE that gives the clip back, in the database's time. Returns {clip id: attempts} of those
    queued again."""
    rows = session.execute(TAKE_BACK, {"max": max_attempts}).all()
    return {clip_id: attempts for clip_id, status, attempts in rows if status == ClipStatus.QUEUED}


def retry_delay(attempt: int, base_s: float) -> float:
    """How long a clip waits before it is offered again after its `attempt`-th attempt failed: `base_s`, then
    twice as long after each further failure, at most RETRY_DELAY_MAX_S (so a clip that fails at once does not
    spin through its attempts, and a passing fault has time to pass)."""
    if base_s <= 0:
        return 0.0
    return min(base_s * 2 ** max(attempt - 1, 0), RETRY_DELAY_MAX_S)


def retry_failed(session: Session) -> list[int]:
    """Put every failed clip back in the queue with a fresh attempt count (`farm retry --failed`). The hosts'
    strikes on it start again too (they count from this event)."""
    ids = list(session.scalars(select(Clip.id).where(Clip.status == ClipStatus.FAILED)))
    if ids:
        session.execute(
            update(CLIPS)
            .where(CLIPS.c.id.in_(ids), CLIPS.c.status == ClipStatus.FAILED)
            .values(
                status=ClipStatus.QUEUED,
                attempts=0,
                updated_at=db_now(),
                changed_by=None,
                change_note="retry requested",
            )
        )
    return ids


def is_paused(session: Session) -> bool:
    return session.scalar(select(PAUSED)) == "1"


def set_paused(session: Session, paused: bool) -> None:
    session.merge(FarmSetting(key="paused", value="1" if paused else "0", updated_at=utcnow()))


def pause_worker(db: Db, worker: str, seconds: float | None, reason: str | None = None) -> None:
    """Record that `worker` takes no clips for `seconds` (in the database's time) and why, for `farm status`
    and the dashboard; None clears it (the worker takes clips again)."""
    if seconds is None:
        db.execute(UNPAUSE_WORKER, {"by": worker})
    else:
        db.execute(PAUSE_WORKER, {"by": worker, "pause_s": seconds, "reason": reason})


# ---- surviving a dropped connection ---------------------------------------------------------------------


def once_more(url: str, op: Callable[[Connection], T], wait_s: float) -> T:
    """Run `op` on an autocommit connection; if the database dropped the connection (a restart, a failover),
    wait up to `wait_s` for it to accept connections again and run `op` once more.

    Only for ops made of the statements above, which mean the same when run twice with the same lease token.
    Waiting to connect is always safe (nothing has run), so that is retried until `wait_s` has passed.
    """
    deadline = time.monotonic() + wait_s
    for attempt in (1, 2):
        try:
            with _connected(url, deadline) as db:
                return op(db)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
            log.warning("the database dropped the connection (%s); trying once more", _first_line(exc))
    raise AssertionError("unreachable")


@contextmanager
def _connected(url: str, deadline: float) -> Iterator[Connection]:
    ready_engine(url)
    engine = get_engine(url, autocommit=True)
    while True:
        try:
            conn = engine.connect()
            break
        except OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("cannot reach the database (%s); waiting for it", _first_line(exc))
            time.sleep(0.5)
    with conn:
        yield conn


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- the rare paths ----------------------------------------------------------------------------------------


def _refusal(db: Db, clip_id: int, worker: str, token: str, lease: timedelta) -> Lease | Refusal:
    """Why the claim matched nothing, read after the fact (it is the rare path: duplicates and races). A clip
    running under this very token was claimed by a first run of this claim whose reply was lost: its lease.

    A queued clip this host may not take, that no other live host may take either, is failed here with its
    last error: otherwise it would wait in the queue for nobody, and nothing would say why."""
    params = {"clip": clip_id, "host": host_of(worker), "lease_s": lease.total_seconds()}
    row = db.execute(
        select(
            CLIPS.c.status,
            case((CLIPS.c.lease_expires_at < db_now(), 1), else_=0).label("expired"),
            CLIPS.c.attempts,
            CLIPS.c.lease_token,
            CLIPS.c.error,
            PAUSED.label("paused"),
            case((MAY_TAKE, 1), else_=0).label("may_take"),
        ).where(CLIPS.c.id == bindparam("clip")),
        params,
    ).one_or_none()
    if row is None:
        return Refusal.UNKNOWN
    if row.status == ClipStatus.RUNNING and row.lease_token == token:
        spec = db.execute(select(CLIPS.c.spec).where(CLIPS.c.id == clip_id)).scalar_one()
        return Lease(clip_id, token, spec, row.attempts)
    expired = row.status == ClipStatus.RUNNING and bool(row.expired)
    if row.status == ClipStatus.RUNNING and not expired:
        return Refusal.TAKEN
    if row.status != ClipStatus.QUEUED and not expired:
        return Refusal.OVER
    if row.paused == "1":
        return Refusal.PAUSED
    if not row.may_take:
        if row.status == ClipStatus.QUEUED and _changed(
            db.execute(
                FAIL_UNTAKEN,
                {
                    **params,
                    "read_attempts": row.attempts,
                    "by": worker,
                    "error": f"{(row.error or 'unknown')[:1800]}; {NO_TAKER_NOTE}",
                },
            )
        ):
            return Refusal.NO_TAKER
        return Refusal.EXCLUDED
    return Refusal.TAKEN  # it changed between the update and this read: another worker was quicker


def _own(db: Db, lease: Lease) -> str | None:
    """The clip's status if this lease made its latest change (its token is still on it), else None."""
    row = db.execute(
        select(CLIPS.c.status, CLIPS.c.lease_token).where(CLIPS.c.id == bindparam("clip")),
        {"clip": lease.clip_id},
    ).one_or_none()
    return row.status if row is not None and row.lease_token == lease.token else None


def _changed(result: Any) -> bool:
    """Whether a conditional UPDATE of one row matched (the compare-and-swap succeeded)."""
    return cast(CursorResult[Any], result).rowcount == 1


def _holder(lease: Lease) -> dict[str, Any]:
    """The parameters of HELD for this lease."""
    return {"clip": lease.clip_id, "token": lease.token}
