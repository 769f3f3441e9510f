"""The queries behind the dashboard and the JSON API; each takes a Session and returns plain JSON-able data.

Everything is read from the database on each request (it is the source of truth); the queries are
aggregates over indexed columns so that a page stays fast with the paper's 67,529 clips. The progress
toward the target (`farm status`, /api/progress) is in progress.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from farm.core.db import db_now
from farm.core.errors import FarmError
from farm.core.models import Clip, ClipStatus, FarmSetting, WorkerRecord
from farm.dashboard.progress import farm_status

BUCKET = timedelta(minutes=10)
HISTORY = timedelta(hours=24)
# A worker renews its heartbeat while it renders; one silent this long has probably died.
WORKER_STALE = timedelta(minutes=5)
# Workers silent (stopped or dead) longer than this are not listed: each recycled pool process is a new
# host:pid, so /api/workers and /metrics' labels would grow forever. New workers delete such rows
# (worker/claims.py, FORGET_WORKERS_S); the clips keep their workers' names.
WORKER_FORGOTTEN = timedelta(days=1)
NAMES_PER_REASON = 50
RENDER_SECONDS_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600)
CLIP_PAGE = 100
THUMBNAILS = 12


def clips_page(
    session: Session, state: str | None, limit: int = CLIP_PAGE, offset: int = 0
) -> dict[str, Any]:
    """Clip counts per state and, for one state, a page of its clips, most recently changed first."""
    counts = dict.fromkeys(ClipStatus.ALL, 0)
    counts.update(session.execute(select(Clip.status, func.count()).group_by(Clip.status)).all())
    result: dict[str, Any] = {"counts": counts}
    if state is None:
        return result
    if state not in ClipStatus.ALL:
        raise FarmError(f"unknown clip state {state!r}; use one of {', '.join(ClipStatus.ALL)}")
    rows = session.execute(
        select(
            Clip.id,
            Clip.name,
            Clip.split,
            Clip.run,
            Clip.status,
            Clip.attempts,
            Clip.worker,
            Clip.updated_at,
            Clip.finished_at,
            Clip.frames_done,
            Clip.render_seconds,
            Clip.error,
            Clip.output_uri,
        )  # fmt: skip
        .where(Clip.status == state)
        .order_by(Clip.updated_at.desc(), Clip.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    clips = [
        {**row._asdict(), "updated_at": _iso(row.updated_at), "finished_at": _iso(row.finished_at)}
        for row in rows
    ]
    return {**result, "state": state, "total": counts[state], "offset": offset, "clips": clips}


def failures(session: Session, names_per_reason: int = NAMES_PER_REASON) -> list[dict[str, Any]]:
    """Failed clips grouped by their error, biggest group first, with up to `names_per_reason` clip names."""
    failed = Clip.status == ClipStatus.FAILED
    groups = session.execute(
        select(Clip.error, func.count())
        .where(failed)
        .group_by(Clip.error)
        .order_by(func.count().desc(), Clip.error)
    ).all()
    # A window numbers the clips inside each reason, so one query fetches a bounded list of names per group.
    numbered = (
        select(
            Clip.error,
            Clip.name,
            func.row_number().over(partition_by=Clip.error, order_by=Clip.name).label("n"),
        )
        .where(failed)
        .subquery()
    )
    names: dict[str | None, list[str]] = {}
    for why, name in session.execute(
        select(numbered.c.error, numbered.c.name)
        .where(numbered.c.n <= names_per_reason)
        .order_by(numbered.c.error, numbered.c.n)
    ):
        names.setdefault(why, []).append(name)
    return [{"reason": why or "unknown", "clips": n, "names": names.get(why, [])} for why, n in groups]


def workers(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Every worker seen within WORKER_FORGOTTEN, latest heartbeat first. What each renders and how many clips
    it finished are read from the clips, which always say it (the heartbeat only says the worker is alive)."""
    paused_now = case((WorkerRecord.paused_until > db_now(), 1), else_=0)  # in the database's time
    seen = session.execute(
        select(WorkerRecord, paused_now)
        .where(WorkerRecord.last_seen_at >= now - WORKER_FORGOTTEN)
        .order_by(WorkerRecord.last_seen_at.desc(), WorkerRecord.name)
    ).all()
    rendering = {
        worker: (clip_id, name)  # ordered by start, so a stale running clip gives way to the newer one
        for worker, clip_id, name in session.execute(
            select(Clip.worker, Clip.id, Clip.name)
            .where(Clip.status == ClipStatus.RUNNING)
            .order_by(Clip.started_at)
        )
    }
    done = dict(
        session.execute(
            select(Clip.worker, func.count()).where(Clip.status == ClipStatus.DONE).group_by(Clip.worker)
        ).all()
    )
    out = []
    for worker, paused in seen:
        age = (now - _aware(worker.last_seen_at)).total_seconds()
        current_id, current_name = rendering.get(worker.name, (None, None))
        out.append(
            {
                "name": worker.name,
                "hostname": worker.hostname,
                "device": worker.device,
                "started_at": _iso(worker.started_at),
                "last_seen_at": _iso(worker.last_seen_at),
                "seconds_since_heartbeat": round(age, 1),
                # Gone once it says it stopped (a clean shutdown), or once its heartbeat is stale (a crash).
                "alive": worker.stopped_at is None and age <= WORKER_STALE.total_seconds(),
                "stopped_at": _iso(worker.stopped_at),
                "clips_done": done.get(worker.name, 0),
                "current_clip_id": current_id,
                "current_clip": current_name,
                # A worker that failed several clips in a row takes none until paused_until, and says why.
                "paused": bool(paused),
                "paused_until": _iso(worker.paused_until) if paused else None,
                "pause_reason": worker.pause_reason if paused else None,
            }
        )
    return out


def _epoch(session: Session, column: Any) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.date_part("epoch", column)  # a double: extract() gives numeric, twice as slow here
    return cast(func.strftime("%s", column), Integer)  # SQLite keeps datetimes as UTC text


def throughput(
    session: Session, now: datetime, history: timedelta = HISTORY, bucket: timedelta = BUCKET
) -> dict[str, Any]:
    """Clips and frames finished per bucket (aligned to the clock) over the last `history`, oldest first."""
    step = int(bucket.total_seconds())
    last = int(now.timestamp()) // step
    first = last - int(history / bucket) + 1
    since = datetime.fromtimestamp(first * step, UTC)
    index = func.floor(_epoch(session, Clip.finished_at) / step)
    rows = session.execute(
        select(index, func.count(), func.sum(Clip.frames_done))
        .where(Clip.status == ClipStatus.DONE, Clip.finished_at >= since)
        .group_by(index)
    ).all()
    found = {int(i): (n, int(frames or 0)) for i, n, frames in rows}
    buckets = []
    for i in range(first, last + 1):
        n, frames = found.get(i, (0, 0))
        buckets.append({"start": _iso(datetime.fromtimestamp(i * step, UTC)), "clips": n, "frames": frames})
    return {
        "bucket_seconds": step,
        "since": _iso(since),
        "buckets": buckets,
        "clips": sum(b["clips"] for b in buckets),
        "frames": sum(b["frames"] for b in buckets),
    }


def recent_clips(session: Session, n: int = THUMBNAILS) -> list[dict[str, Any]]:
    """The most recently finished clips (their thumbnails are shown on the dashboard)."""
    rows = session.execute(
        select(Clip.id, Clip.name, Clip.split, Clip.run, Clip.finished_at, Clip.frames_done)
        .where(Clip.status == ClipStatus.DONE, Clip.finished_at.is_not(None))
        .order_by(Clip.finished_at.desc())
        .limit(n)
    ).all()
    return [
        {**row._asdict(), "finished_at": _iso(row.finished_at), "thumbnail": f"/thumb/{row.id}.jpg"}
        for row in rows
    ]


def render_seconds(session: Session) -> dict[str, Any]:
    """A cumulative histogram of finished clips' render times, in one pass over the finished clips."""
    columns = [func.sum(case((Clip.render_seconds <= b, 1), else_=0)) for b in RENDER_SECONDS_BUCKETS]
    row = session.execute(
        select(func.count(), func.sum(Clip.render_seconds), *columns).where(
            Clip.status == ClipStatus.DONE, Clip.render_seconds.is_not(None)
        )
    ).one()
    count, total, *cumulative = (v or 0 for v in row)
    buckets = dict(zip(RENDER_SECONDS_BUCKETS, map(int, cumulative), strict=True))
    return {"count": int(count), "sum": float(total), "buckets": buckets}


def paused(session: Session) -> bool:
    value = session.scalar(select(FarmSetting.value).where(FarmSetting.key == "paused"))
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def done_clip_spec(session: Session, clip_id: int) -> Any:
    """The spec of a finished clip (where its thumbnail is), or None when the clip is missing or not done."""
    row = session.execute(select(Clip.status, Clip.spec).where(Clip.id == clip_id)).one_or_none()
    return None if row is None or row.status != ClipStatus.DONE else row.spec


def dashboard_data(session: Session, target_frames: int, now: datetime) -> dict[str, Any]:
    """Everything the dashboard page shows."""
    return {
        "now": _iso(now),
        "progress": farm_status(session, target_frames),
        "paused": paused(session),
        "throughput": throughput(session, now),
        "failures": failures(session, names_per_reason=20),
        "workers": workers(session, now),
        "recent": recent_clips(session),
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive UTC


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _aware(moment).astimezone(UTC).isoformat()
