"""Where the farm stands: progress toward the target frames, clips per state, failures, throughput, ETA.

The rate is the frames of the clips finished in the last hour over the time the farm spent rendering them
(rendering_seconds), and the ETA is the frames left at that rate: an idle hour neither lowers the rate nor
stretches the ETA. `farm status`, the dashboard and /metrics all read it from here."""

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

    recent = session.execute(
        select(Clip.started_at, Clip.finished_at, Clip.frames_done)
        .where(Clip.status == ClipStatus.DONE, Clip.finished_at >= utcnow() - THROUGHPUT_WINDOW)
        .order_by(Clip.started_at)
    ).all()
    recent_clips, recent_frames = len(recent), sum(frames or 0 for _, _, frames in recent)
    rendering = rendering_seconds([(start, end) for start, end, _ in recent if start and end])
    frames_per_second = recent_frames / rendering if rendering > 0 else 0.0
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
            "frames": int(recent_frames),
            "rendering_seconds": rendering,
            "frames_per_second": frames_per_second,
        },
        "eta_seconds": (remaining / frames_per_second) if frames_per_second > 0 else None,
    }


def rendering_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """How long at least one of these clips was rendering: the length of the union of their (start, end)
    intervals, given in order of start. The rate is frames over this time, not over the whole window, so a
    farm that rendered 200 frames in 13 s of the last hour renders 15 frames/s, not 0.06."""
    spans: list[list[datetime]] = []  # merged [start, end] pairs
    for start, end in intervals:
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return sum((end - start).total_seconds() for start, end in spans)


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
