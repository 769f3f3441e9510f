"""Where the farm stands: progress toward the target frames, clips per state, failures, throughput, ETA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.core.db import db_now, utcnow
from farm.core.models import BODY_OUT_OF_FRAME, Clip, ClipStatus, WorkerRecord

THROUGHPUT_WINDOW = timedelta(hours=1)


def farm_status(session: Session, target_frames: int) -> dict[str, Any]:
    planned_frames = func.sum(Clip.frame_stop - Clip.frame_start)
    rows = session.execute(
        select(
            Clip.split, Clip.run, Clip.status, func.count(), planned_frames, func.sum(Clip.frames_done)
        ).group_by(Clip.split, Clip.run, Clip.status)
    ).all()
    clips = dict.fromkeys(ClipStatus.ALL, 0)
    splits: dict[str, Any] = {}
    for split, run, state, count, frames, done in rows:
        clips[state] = clips.get(state, 0) + count
        split_part = splits.setdefault(split, {**_counts(), "runs": {}})
        run_part = split_part["runs"].setdefault(f"run{run}", _counts())
        for part in (split_part, run_part):
            part["clips_planned"] += count
            part["frames_planned"] += int(frames or 0)
            if state == ClipStatus.DONE:
                part["clips_done"] += count
                part["frames_done"] += int(done or 0)
    frames_done = sum(s["frames_done"] for s in splits.values())

    since = utcnow() - THROUGHPUT_WINDOW
    recent_clips, recent_frames = session.execute(
        select(func.count(Clip.id), func.sum(Clip.frames_done)).where(
            Clip.status == ClipStatus.DONE, Clip.finished_at >= since
        )
    ).one()
    frames_per_second = (recent_frames or 0) / THROUGHPUT_WINDOW.total_seconds()
    remaining = max(0, target_frames - frames_done)
    failures = session.execute(
        select(Clip.error, func.count(Clip.id))
        .where(Clip.status == ClipStatus.FAILED)
        .group_by(Clip.error)
        .order_by(func.count(Clip.id).desc())
        .limit(20)
    ).all()
    # Done clips whose body is visible in fewer than half their frames (the quality gate's frames_with_body;
    # clips done before it have none and are not counted). A partial index holds exactly these.
    out_of_frame = session.scalar(select(func.count(Clip.id)).where(BODY_OUT_OF_FRAME)) or 0
    return {
        "paused_workers": paused_workers(session),
        "target_frames": target_frames,
        "frames_done": frames_done,
        "progress": frames_done / target_frames if target_frames else 0.0,
        "clips": clips,
        "splits": dict(sorted(splits.items(), key=lambda kv: kv[0] != "train")),
        "failures": [{"reason": reason or "unknown", "clips": n} for reason, n in failures],
        "body_out_of_frame": out_of_frame,
        "throughput": {
            "window_seconds": int(THROUGHPUT_WINDOW.total_seconds()),
            "clips": recent_clips,
            "frames": int(recent_frames or 0),
            "frames_per_second": frames_per_second,
        },
        "eta_seconds": (remaining / frames_per_second) if frames_per_second > 0 else None,
    }


def paused_workers(session: Session) -> list[dict[str, Any]]:
    """Workers that paused themselves after failing several clips in a row, until when (the database's
    time) and why. Each comes back by itself."""
    rows = session.execute(
        select(WorkerRecord.name, WorkerRecord.paused_until, WorkerRecord.pause_reason)
        .where(WorkerRecord.paused_until > db_now())
        .order_by(WorkerRecord.name)
    ).all()
    return [{"name": name, "until": _iso(until), "reason": why} for name, until, why in rows]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()  # SQLite: naive UTC


def _counts() -> dict[str, Any]:
    return {"clips_planned": 0, "frames_planned": 0, "clips_done": 0, "frames_done": 0}
