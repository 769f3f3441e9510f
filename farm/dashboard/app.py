"""The bookkeeping service (`farm bookkeeper`): a JSON API, Prometheus metrics, thumbnails and a dashboard.

Everything is read from the database on each request (it is the source of truth); the queries are
aggregates over indexed columns so that a page stays fast with the paper's 67,529 clips. The HTML is
rendered here, with an inline SVG chart, so that the dashboard needs no JavaScript library and no internet.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, case, cast, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from farm.core.db import db_now, session_scope, utcnow
from farm.core.errors import FarmError
from farm.core.models import Clip, ClipStatus, FarmSetting, WorkerRecord
from farm.core.settings import Settings
from farm.core.spec import ClipSpec
from farm.dashboard.progress import farm_status

log = logging.getLogger(__name__)

BUCKET = timedelta(minutes=10)
HISTORY = timedelta(hours=24)
# A worker renews its heartbeat while it renders; one silent this long has probably died.
WORKER_STALE = timedelta(minutes=5)
NAMES_PER_REASON = 50
RENDER_SECONDS_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600)
CLIP_PAGE = 100
THUMBNAILS = 12


# ---- queries (each takes a Session, returns plain JSON-able data) ----


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
    """Every worker the farm has seen, latest heartbeat first. What each renders and how many clips it finished
    are read from the clips, which always say it (the heartbeat only says the worker is alive)."""
    paused_now = case((WorkerRecord.paused_until > db_now(), 1), else_=0)  # in the database's time
    seen = session.execute(
        select(WorkerRecord, paused_now).order_by(WorkerRecord.last_seen_at.desc(), WorkerRecord.name)
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
                "alive": age <= WORKER_STALE.total_seconds(),
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


def thumbnail_key(spec: Any) -> str:
    """Where a finished clip's thumbnail lives in storage, next to its outputs."""
    clip = ClipSpec.model_validate(spec)
    return f"{clip.output_dir}/{clip.name}_thumb.jpg"


# ---- storage: thumbnails are read through farm.core.storage once it exists; a local/S3 fallback until then ----


def open_thumbnail_reader(settings: Settings) -> Callable[[str], bytes | None]:
    """A function from a storage key to the object's bytes, or None when it is missing or unreadable."""
    try:
        from farm.core.storage import open_storage  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        read = _fallback_reader(settings)
    else:
        read = open_storage(settings).read_bytes

    def read_or_none(key: str) -> bytes | None:
        try:
            return read(key)
        except Exception as exc:  # a missing thumbnail must not break the page; the log says why
            log.warning("thumbnail %s unreadable: %s", key, exc)
            return None

    return read_or_none


def _fallback_reader(settings: Settings) -> Callable[[str], bytes]:
    url = settings.storage_url
    if url.startswith("s3://"):
        import boto3

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)

        def read_s3(key: str) -> bytes:
            name = f"{prefix.rstrip('/')}/{key}" if prefix else key
            body: bytes = client.get_object(Bucket=bucket, Key=name)["Body"].read()
            return body

        return read_s3
    root = Path(url.removeprefix("file://"))
    return lambda key: (root / key).read_bytes()


# ---- Prometheus ----


def metrics_text(session: Session, target_frames: int, now: datetime) -> bytes:
    """The farm's state in Prometheus' text format, computed from the database at scrape time."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector

    status = farm_status(session, target_frames)
    fails = session.execute(
        select(Clip.error, func.count())
        .where(Clip.status == ClipStatus.FAILED)
        .group_by(Clip.error)
        .order_by(func.count().desc())
        .limit(20)  # reasons become label values: keep their number bounded
    ).all()
    seen = workers(session, now)
    hist = render_seconds(session)

    families: list[Any] = []
    g = GaugeMetricFamily("farm_target_frames", "Frames the farm is to render.", value=target_frames)
    families.append(g)
    g = GaugeMetricFamily("farm_frames_done", "Frames of finished clips.", labels=["split", "run"])
    p = GaugeMetricFamily("farm_frames_planned", "Frames of all planned clips.", labels=["split", "run"])
    for split, part in status["splits"].items():
        for run, rp in part["runs"].items():
            g.add_metric([split, run.removeprefix("run")], rp["frames_done"])
            p.add_metric([split, run.removeprefix("run")], rp["frames_planned"])
    families += [g, p]
    g = GaugeMetricFamily("farm_clips", "Clips per state.", labels=["state"])
    for state, n in status["clips"].items():
        g.add_metric([state], n)
    families.append(g)
    families.append(
        GaugeMetricFamily(
            "farm_clips_body_out_of_frame",
            "Done clips whose body is visible in fewer than half their frames.",
            value=status["body_out_of_frame"],
        )
    )
    g = GaugeMetricFamily(
        "farm_clips_failed", "Failed clips per reason (the 20 commonest).", labels=["reason"]
    )
    for why, n in fails:
        g.add_metric([why.splitlines()[0][:200] if why else "unknown"], n)
    families.append(g)
    h = HistogramMetricFamily("farm_clip_render_seconds", "Render time of finished clips.")
    buckets = [(str(float(b)), n) for b, n in hist["buckets"].items()] + [("+Inf", hist["count"])]
    h.add_metric([], buckets, hist["sum"])
    families.append(h)
    tp = status["throughput"]
    families.append(
        GaugeMetricFamily(
            "farm_frames_per_second",
            "Frames finished per second over the last hour.",
            value=tp["frames_per_second"],
        )
    )
    if status["eta_seconds"] is not None:
        families.append(
            GaugeMetricFamily(
                "farm_eta_seconds", "Time to the target at the last hour's rate.", value=status["eta_seconds"]
            )
        )
    families.append(
        GaugeMetricFamily("farm_workers_seen", "Workers that have ever sent a heartbeat.", value=len(seen))
    )
    families.append(
        GaugeMetricFamily(
            "farm_workers_alive", "Workers with a recent heartbeat.", value=sum(w["alive"] for w in seen)
        )
    )
    families.append(
        GaugeMetricFamily(
            "farm_workers_paused",
            "Workers that paused themselves after failing several clips in a row.",
            value=sum(w["paused"] for w in seen),
        )
    )
    g = GaugeMetricFamily(
        "farm_worker_last_heartbeat_timestamp_seconds", "Last heartbeat per worker.", labels=["worker"]
    )
    for w in seen:
        g.add_metric([w["name"]], now.timestamp() - w["seconds_since_heartbeat"])
    families.append(g)

    class Snapshot(Collector):
        def collect(self) -> Any:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


# ---- the HTML dashboard ----


def dashboard_data(session: Session, target_frames: int, now: datetime) -> dict[str, Any]:
    return {
        "now": _iso(now),
        "progress": farm_status(session, target_frames),
        "paused": paused(session),
        "throughput": throughput(session, now),
        "failures": failures(session, names_per_reason=20),
        "workers": workers(session, now),
        "recent": recent_clips(session),
    }


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #eee}
th:first-child,td:first-child{text-align:left}.bar{background:#e4e4e4;width:160px;height:10px;display:inline-block}
.bar i{display:block;height:10px;background:#2a7}.big{font-size:28px;font-weight:600}.muted{color:#777}
.paused{background:#fd3;padding:6px 10px;font-weight:600}.stale{color:#b33}.alive{color:#2a7}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumbs figure{margin:0;font-size:12px;width:160px}
.thumbs img{width:160px;height:120px;object-fit:cover;background:#ddd;display:block}
.names{font-family:monospace;font-size:12px;color:#555;text-align:left;max-width:700px}
.state-queued{color:#777}.state-running{color:#27a}.state-done{color:#2a7}.state-failed{color:#b33}
"""


def render_dashboard(data: dict[str, Any]) -> str:
    status = data["progress"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>surreal-farm</title>",
        "<meta http-equiv='refresh' content='60'><meta name='viewport' content='width=device-width'>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>surreal-farm</h1><div class='muted'>as of {escape(data['now'][:19].replace('T', ' '))} UTC, refreshed every minute</div>",
    ]
    if data["paused"]:
        parts.append(
            "<p class='paused' id='paused'>The farm is paused: workers take no new clips (`farm resume`).</p>"
        )
    eta = status["eta_seconds"]
    tp = status["throughput"]
    parts.append(
        f"<p><span class='big'>{_num('frames-done', status['frames_done'])}</span> of "
        f"{_num('target-frames', status['target_frames'])} frames done "
        f"(<span id='progress'>{100 * status['progress']:.2f}</span>%) {_bar(status['progress'])}<br>"
        f"last hour: {_num('hour-clips', tp['clips'])} clips, {_num('hour-frames', tp['frames'])} frames, "
        f"{tp['frames_per_second']:.2f} frames/s; ETA <b id='eta'>{escape(_duration(eta))}</b></p>"
    )

    parts.append("<h2>Progress per split and run</h2><table id='splits'>")
    parts.append(
        "<tr><th>split / run</th><th>clips done</th><th>clips planned</th><th>frames done</th><th>frames planned</th><th></th></tr>"
    )
    for split, part in status["splits"].items():
        rows = [(split, split, part)] + [
            (f"{split}-{run}", f"&nbsp;&nbsp;{run}", rp) for run, rp in sorted(part["runs"].items())
        ]
        for key, label, p in rows:
            share = p["frames_done"] / p["frames_planned"] if p["frames_planned"] else 0.0
            parts.append(
                f"<tr id='split-{escape(key)}'><td>{label if label.startswith('&') else escape(label)}</td>"
                + "".join(
                    f"<td>{_num('', p[k], k)}</td>"
                    for k in ("clips_done", "clips_planned", "frames_done", "frames_planned")
                )
                + f"<td>{_bar(share)}</td></tr>"
            )
    parts.append("</table>")

    parts.append("<h2>Clips per state</h2><table id='states'><tr>")
    parts.append("".join(f"<th class='state-{s}'>{s}</th>" for s in status["clips"]) + "</tr><tr>")
    parts.append(
        "".join(f"<td>{_num(f'state-{s}', n)}</td>" for s, n in status["clips"].items()) + "</tr></table>"
    )
    parts.append(
        f"<p>{_num('body-out-of-frame', status['body_out_of_frame'])} done clips show the body in fewer than half "
        "their frames <span class='muted'>(by the quality gate's frames_with_body; `farm qc` shows every clip's)</span></p>"
    )

    th = data["throughput"]
    parts.append(
        f"<h2>Throughput, last 24 hours</h2><div class='muted'>frames finished per {th['bucket_seconds'] // 60} minutes; "
        f"{_num('day-frames', th['frames'])} frames in {_num('day-clips', th['clips'])} clips</div>"
    )
    parts.append(throughput_svg(th))

    parts.append("<h2>Failures</h2>")
    if not data["failures"]:
        parts.append("<p id='failures' class='muted'>No failed clips.</p>")
    else:
        parts.append(
            "<table id='failures'><tr><th>reason</th><th>clips</th><th class='names'>clip names</th></tr>"
        )
        for f in data["failures"]:
            more = f["clips"] - len(f["names"])
            names = ", ".join(escape(n) for n in f["names"]) + (f" and {more:,} more" if more > 0 else "")
            parts.append(
                f"<tr class='failure'><td class='reason'>{escape(f['reason'])}</td><td>{_num('', f['clips'], 'count')}</td>"
                f"<td class='names'>{names}</td></tr>"
            )
        parts.append("</table>")

    alive = sum(w["alive"] for w in data["workers"])
    parts.append(
        f"<h2>Workers</h2><div class='muted'>{_num('workers-alive', alive)} alive of {_num('workers-seen', len(data['workers']))} seen (alive: a heartbeat within {int(WORKER_STALE.total_seconds() // 60)} minutes)</div>"
    )
    parts.append(
        "<table id='workers'><tr><th>worker</th><th>host</th><th>device</th><th>clips done</th><th>rendering</th><th>last heartbeat</th><th>paused</th></tr>"
    )
    for w in data["workers"]:
        state = "alive" if w["alive"] else "stale"
        pause = (
            f"<td class='pause-reason' title='until {escape(w['paused_until'] or '')}'>until {escape((w['paused_until'] or '')[11:19])} UTC: it {escape(w['pause_reason'] or '')}</td>"
            if w["paused"]
            else "<td></td>"
        )
        parts.append(
            f"<tr class='worker {state}{' paused-worker' if w['paused'] else ''}'><td>{escape(w['name'])}</td><td>{escape(w['hostname'])}</td><td>{escape(w['device'])}</td>"
            f"<td>{_num('', w['clips_done'], 'clips_done')}</td><td>{escape(w['current_clip'] or '')}</td>"
            f"<td class='{state}' title='{escape(w['last_seen_at'] or '')}'>{escape(_duration(w['seconds_since_heartbeat']))} ago</td>{pause}</tr>"
        )
    parts.append("</table>")

    parts.append("<h2>Most recent clips</h2><div class='thumbs' id='thumbs'>")
    for c in data["recent"]:
        # onload/onerror mark each thumbnail, so a missing one is visible (and checkable) rather than blank.
        parts.append(
            f"<figure><img class='thumb' src='{c['thumbnail']}' alt='{escape(c['name'])}' loading='eager' "
            "onload=\"this.dataset.loaded=this.naturalWidth\" onerror=\"this.dataset.loaded='0';this.alt+=' (no thumbnail)'\">"
            f"<figcaption>{escape(c['name'])}<br><span class='muted'>{escape(c['split'])} run{c['run']}, {escape((c['finished_at'] or '')[:16].replace('T', ' '))}</span></figcaption></figure>"
        )
    if not data["recent"]:
        parts.append("<p class='muted'>No finished clips yet.</p>")
    parts.append("</div>")
    parts.append(
        "<p class='muted'>JSON: <a href='/api/progress'>progress</a> · <a href='/api/clips'>clips</a> · <a href='/api/failures'>failures</a> · <a href='/api/workers'>workers</a> · <a href='/api/throughput'>throughput</a> · <a href='/metrics'>metrics</a></p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def throughput_svg(th: dict[str, Any], width: int = 1100, height: int = 220) -> str:
    """Bars of frames per bucket, with a y scale and a time label every 4 hours."""
    left, bottom, top = 60, 24, 10
    buckets = th["buckets"]
    peak = max((b["frames"] for b in buckets), default=0) or 1
    plot_w, plot_h = width - left - 10, height - bottom - top
    step = plot_w / max(1, len(buckets))
    out = [
        f"<svg id='throughput-chart' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' aria-label='frames finished per bucket'>"
    ]
    out.append(
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#999'/>"
    )
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(
            f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end' fill='#555'>{int(peak * frac):,}</text>"
        )
        out.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + plot_w}' y2='{y:.1f}' stroke='#eee'/>")
    label_step = 4 * 3600  # a time label on every 4th whole hour
    for i, b in enumerate(buckets):
        x = left + i * step
        if b["frames"]:
            h = plot_h * b["frames"] / peak
            out.append(
                f"<rect class='bucket' x='{x + 0.5:.1f}' y='{top + plot_h - h:.1f}' width='{max(1.0, step - 1):.1f}' height='{h:.1f}' fill='#2a7'>"
                f"<title>{b['start'][11:16]} UTC: {b['frames']:,} frames, {b['clips']:,} clips</title></rect>"
            )
        if int(datetime.fromisoformat(b["start"]).timestamp()) % label_step == 0:
            out.append(
                f"<text x='{x:.1f}' y='{height - 6}' font-size='11' fill='#555'>{b['start'][11:16]}</text>"
            )
    out.append("</svg>")
    return "".join(out)


def _num(ident: str, value: int, cls: str = "") -> str:
    """A number shown with thousands separators, its exact value kept in data-value for tools and tests."""
    attrs = (f" id='{ident}'" if ident else "") + (f" class='{cls}'" if cls else "")
    return f"<span{attrs} data-value='{value}'>{value:,}</span>"


def _bar(share: float) -> str:
    return f"<span class='bar'><i style='width:{100 * min(1.0, max(0.0, share)):.1f}%'></i></span>"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (nothing finished in the last hour)"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{secs} s"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive UTC


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else _aware(moment).astimezone(UTC).isoformat()


# ---- the web service (tornado, which Flower already brings) ----


class Bookkeeper:
    """What the handlers share: the settings and the thumbnail reader."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.read_thumbnail = open_thumbnail_reader(settings)

    def query(self, fn: Callable[[Session, datetime], Any]) -> Any:
        with session_scope(self.settings.database_url) as session:
            if session.get_bind().dialect.name == "postgresql":
                # These aggregates take a few ms on one core; starting parallel workers costs more than that.
                session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            return fn(session, utcnow())

    def thumbnail(self, clip_id: int) -> bytes | None:
        with session_scope(self.settings.database_url) as session:
            row = session.execute(select(Clip.status, Clip.spec).where(Clip.id == clip_id)).one_or_none()
        if row is None or row.status != ClipStatus.DONE:
            return None
        return self.read_thumbnail(thumbnail_key(row.spec))


def make_app(settings: Settings) -> Any:
    import tornado.web
    from tornado.ioloop import IOLoop

    keeper = Bookkeeper(settings)
    target = settings.target_frames

    class Base(tornado.web.RequestHandler):
        async def run(self, fn: Callable[[Session, datetime], Any]) -> Any:
            # Queries are blocking; a thread keeps the loop free for other requests meanwhile.
            return await IOLoop.current().run_in_executor(None, keeper.query, fn)

        def send_json(self, data: Any) -> None:
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(data))

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            exc = kwargs.get("exc_info", (None, None))[1]
            message = str(exc) if isinstance(exc, FarmError) else self._reason
            self.finish({"error": message})

    class Progress(Base):
        async def get(self) -> None:
            self.send_json(await self.run(lambda s, _: farm_status(s, target)))

    class Clips(Base):
        async def get(self) -> None:
            state = self.get_query_argument("state", None)
            limit = min(1000, max(1, _int_arg(self, "limit", CLIP_PAGE)))
            offset = max(0, _int_arg(self, "offset", 0))
            if state is not None and state not in ClipStatus.ALL:
                raise tornado.web.HTTPError(
                    400, reason=f"unknown state {state!r}; use one of {', '.join(ClipStatus.ALL)}"
                )
            self.send_json(await self.run(lambda s, _: clips_page(s, state, limit, offset)))

    class Failures(Base):
        async def get(self) -> None:
            self.send_json({"failures": await self.run(lambda s, _: failures(s))})

    class Workers(Base):
        async def get(self) -> None:
            self.send_json(
                {"workers": await self.run(workers), "stale_after_seconds": WORKER_STALE.total_seconds()}
            )

    class Throughput(Base):
        async def get(self) -> None:
            self.send_json(await self.run(throughput))

    class Metrics(Base):
        async def get(self) -> None:
            from prometheus_client import CONTENT_TYPE_LATEST

            body = await self.run(lambda s, now: metrics_text(s, target, now))
            self.set_header("Content-Type", CONTENT_TYPE_LATEST)
            self.finish(body)

    class Thumb(Base):
        async def get(self, clip_id: str) -> None:
            data = await IOLoop.current().run_in_executor(None, keeper.thumbnail, int(clip_id))
            if data is None:
                raise tornado.web.HTTPError(404, reason=f"clip {clip_id} has no thumbnail")
            self.set_header("Content-Type", "image/jpeg")
            self.set_header("Cache-Control", "max-age=86400")  # a finished clip's thumbnail never changes
            self.finish(data)

    class Dashboard(Base):
        async def get(self) -> None:
            data = await self.run(lambda s, now: dashboard_data(s, target, now))
            self.set_header("Cache-Control", "no-store")
            self.finish(render_dashboard(data))

    return tornado.web.Application(
        [
            (r"/", Dashboard),
            (r"/api/progress", Progress),
            (r"/api/clips", Clips),
            (r"/api/failures", Failures),
            (r"/api/workers", Workers),
            (r"/api/throughput", Throughput),
            (r"/metrics", Metrics),
            (r"/thumb/([0-9]+)\.jpg", Thumb),
        ]
    )


def _int_arg(handler: Any, name: str, default: int) -> int:
    import tornado.web

    raw = handler.get_query_argument(name, None)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise tornado.web.HTTPError(400, reason=f"{name}={raw!r} is not a whole number") from None


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted. The database is checked first, so a wrong URL fails at once."""
    import asyncio

    from farm.core.db import ready_engine, safe_url

    ready_engine(settings.database_url)
    app = make_app(settings)

    async def main() -> None:
        try:
            app.listen(port, address=host)
        except OSError as exc:
            raise FarmError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc
        log.info("bookkeeper on http://%s:%d/ reading %s", host, port, safe_url(settings.database_url))
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


class Background:
    """The service on a thread of its own, on a free port of 127.0.0.1 (tests and benchmarks use it)."""

    def __init__(self, settings: Settings) -> None:
        import asyncio
        import threading

        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        sockets = bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = HTTPServer(make_app(settings))
            self.server.add_sockets(sockets)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="bookkeeper", daemon=True)
        self.thread.start()
        started.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
