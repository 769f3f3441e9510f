"""The farm's state as Prometheus metrics (/metrics), computed from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from farm.dashboard.progress import farm_status
from farm.dashboard.queries import render_seconds, workers


class Snapshot(Collector):
    """Metric families gathered once, handed to one registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def metrics_text(session: Session, target_frames: int, now: datetime) -> bytes:
    """The farm's state in Prometheus' text format."""
    status = farm_status(session, target_frames)
    seen = workers(session, now)
    hist = render_seconds(session)

    families: list[Metric] = []
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
    # farm_status keeps the 20 commonest reasons: label values stay bounded.
    for failure in status["failures"]:
        g.add_metric([failure["reason"].splitlines()[0][:200]], failure["clips"])
    families.append(g)
    h = HistogramMetricFamily("farm_clip_render_seconds", "Render time of finished clips.")
    buckets = [(str(float(b)), n) for b, n in hist["buckets"].items()] + [("+Inf", hist["count"])]
    h.add_metric([], buckets, hist["sum"])
    families.append(h)
    tp = status["throughput"]
    families.append(
        GaugeMetricFamily(
            "farm_frames_per_second",
            "Frames per second of rendering: the last hour's finished frames over the time spent rendering them.",
            value=tp["frames_per_second"],
        )
    )
    if status["eta_seconds"] is not None:
        families.append(
            GaugeMetricFamily(
                "farm_eta_seconds",
                "Time to the target at the rendering rate (farm_frames_per_second).",
                value=status["eta_seconds"],
            )
        )
    families.append(
        GaugeMetricFamily(
            "farm_workers_seen", "Workers that sent a heartbeat within the last day.", value=len(seen)
        )
    )
    families.append(
        GaugeMetricFamily(
            "farm_workers_alive",
            "Workers not stopped and with a recent heartbeat.",
            value=sum(w["alive"] for w in seen),
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

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(families))
    return generate_latest(registry)
