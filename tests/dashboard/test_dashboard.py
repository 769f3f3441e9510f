"""The bookkeeping service against a real PostgreSQL database holding clips in every state, and its dashboard
opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from bookkeeper_server import Background
from conftest import service_missing
from sqlalchemy import create_engine, insert, select, text, update

from farm.core.db import utcnow
from farm.core.models import Clip, WorkerRecord
from farm.core.settings import get_settings
from farm.dashboard.app import thumbnail_key

pytestmark = pytest.mark.services

SEQUENCES = "walk_s01_01,walk_s05_01,run_s01_01,run_s05_01"  # train and test, three runs each
TARGET = 20_000
REASONS = {0: "CUDA error: out of memory", 1: "texture asset not found: textures/female/f_0001.jpg"}
CHROMIUM = os.environ.get("FARM_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = os.environ.get("FARM_TEST_SCREENSHOT")  # a path to keep the screenshot at, to look at it
# (both read at import: the farm_env fixture clears FARM_* variables)


def jpeg(index: int) -> bytes:
    """A small distinct picture per clip, standing in for the worker's thumbnail."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), ((40 * index) % 256, 90, 255 - (40 * index) % 256))
    draw = ImageDraw.Draw(image)
    draw.ellipse((70, 20, 90, 40), fill="white")  # a stick figure, so it reads as "a person"
    draw.line((80, 40, 80, 80), fill="white", width=4)
    draw.line((80, 80, 65, 110), fill="white", width=4)
    draw.line((80, 80, 95, 110), fill="white", width=4)
    draw.line((60, 55, 100, 55), fill="white", width=4)
    out = BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def fill(farm: Any, storage: Path) -> dict[str, Any]:
    """Enqueue a few sequences' clips, then put them into every state; returns what was written."""
    assert farm("catalog", "import", "builtin").code == 0
    result = farm("enqueue", "--sequences", SEQUENCES, "--json")
    assert result.code == 0, result.err
    url = get_settings().database_url
    now = utcnow()
    expected: dict[str, Any] = {"done": [], "failed": {}, "running": [], "thumbs": {}, "done_by": Counter()}
    expected["out_of_frame"] = 0
    # Through SQLAlchemy's Core, so that datetimes are stored the way the farm stores them on every backend.
    with create_engine(url).begin() as conn:
        clips = conn.execute(
            select(Clip.id, Clip.name, Clip.spec, Clip.frame_start, Clip.frame_stop).order_by(Clip.id)
        ).all()
        done_rank = 0
        for i, (clip_id, name, spec, start, stop) in enumerate(clips):
            kind = i % 10
            change = update(Clip).where(Clip.id == clip_id)
            if kind < 5:
                done_rank += 1
                # Finished over the last ~12 hours, one of them 30 hours ago (outside the 24 h chart).
                ago = timedelta(hours=30) if done_rank == 1 else timedelta(minutes=23 * done_rank)
                # Every third body leaves the picture for most of its clip; the first has no statistics (a
                # clip done before the quality gate).
                body = None if done_rank == 1 else (stop - start) // (3 if done_rank % 3 == 0 else 1)
                expected["out_of_frame"] += done_rank % 3 == 0
                conn.execute(
                    change.values(
                        status="done",
                        attempts=1,
                        finished_at=now - ago,
                        started_at=now - ago - timedelta(seconds=90 + i),
                        updated_at=now - ago,
                        frames_done=stop - start,
                        frames_with_body=body,
                        render_seconds=90 + i,
                        output_uri=f"file:///out/{name}",
                        worker=f"gpu{done_rank % 2}@host-a",
                    )
                )
                expected["done_by"][f"gpu{done_rank % 2}@host-a"] += 1
                expected["done"].append((clip_id, stop - start, now - ago))
                if done_rank > 1:  # the oldest has no thumbnail: it must 404, not break the page
                    path = storage / thumbnail_key(spec)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(jpeg(i))
                    expected["thumbs"][clip_id] = path
            elif kind == 5 or kind == 8:
                reason = REASONS[0 if kind == 5 else 1]
                conn.execute(change.values(status="failed", attempts=3, error=reason, updated_at=now))
                expected["failed"].setdefault(reason, []).append(name)
            elif kind == 6:
                conn.execute(
                    change.values(  # the latest start is the worker's current clip
                        status="running",
                        attempts=1,
                        started_at=now - timedelta(seconds=i),
                        updated_at=now,
                        worker="gpu0@host-a",
                    )
                )
                expected["running"].append((clip_id, name))
        workers = [
            ("gpu0@host-a", "host-a", "optix", timedelta(seconds=5)),
            ("gpu1@host-a", "host-a", "optix", timedelta(seconds=40)),
            ("cpu0@host-b", "host-b", "cpu", timedelta(hours=2)),
        ]
        for name, host, device, ago in workers:
            conn.execute(
                insert(WorkerRecord).values(
                    name=name,
                    hostname=host,
                    device=device,
                    started_at=now - timedelta(days=1),
                    last_seen_at=now - ago,
                )
            )
    expected["workers"] = {name: ago < timedelta(minutes=5) for name, _, _, ago in workers}
    expected["clips"] = clips
    return expected


@pytest.fixture
def served(farm, farm_env, pg_url, tmp_path):
    """The bookkeeper on a free local port, over this session's PostgreSQL database, freshly filled."""
    storage = tmp_path / "storage"
    storage.mkdir()
    farm_env(database_url=pg_url, storage_url=str(storage), target_frames=str(TARGET))
    assert farm("db", "upgrade").code == 0
    with create_engine(pg_url).begin() as conn:
        conn.execute(text("TRUNCATE clips, clip_events, workers, farm_settings RESTART IDENTITY CASCADE"))
    expected = fill(farm, storage)
    server = Background(get_settings())
    yield server.url, expected, pg_url
    server.stop()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def sql(pg_url: str, query: str) -> list[Any]:
    with create_engine(pg_url).connect() as conn:
        return conn.execute(text(query)).all()


def test_json_api_matches_the_database(served):
    base, expected, pg_url = served
    progress = get(f"{base}/api/progress")
    states = dict(sql(pg_url, "SELECT status, count(*) FROM clips GROUP BY status"))
    assert progress["clips"] == {s: states.get(s, 0) for s in ("queued", "running", "done", "failed")}
    assert all(progress["clips"][s] > 0 for s in progress["clips"])
    assert progress["frames_done"] == sum(n for _, n, _ in expected["done"])
    assert progress["target_frames"] == TARGET
    assert progress["body_out_of_frame"] == expected["out_of_frame"] > 0
    for split, run, done in sql(
        pg_url, "SELECT split, run, coalesce(sum(frames_done), 0) FROM clips GROUP BY split, run"
    ):
        assert progress["splits"][split]["runs"][f"run{run}"]["frames_done"] == done
    assert set(progress["splits"]) == {"train", "test"}

    clips = get(f"{base}/api/clips?state=failed")
    assert clips["total"] == states["failed"] == len(clips["clips"])
    assert sorted(c["name"] for c in clips["clips"]) == sorted(sum(expected["failed"].values(), []))
    assert get(f"{base}/api/clips")["counts"] == progress["clips"]
    page = get(f"{base}/api/clips?state=queued&limit=5&offset=5")
    assert len(page["clips"]) == 5 and page["total"] == states["queued"]

    failures = get(f"{base}/api/failures")["failures"]
    assert {f["reason"]: sorted(f["names"]) for f in failures} == {
        r: sorted(names) for r, names in expected["failed"].items()
    }
    assert [f["clips"] for f in failures] == sorted(
        (len(n) for n in expected["failed"].values()), reverse=True
    )

    workers = get(f"{base}/api/workers")["workers"]
    assert {w["name"]: w["alive"] for w in workers} == expected["workers"]
    busy = next(w for w in workers if w["name"] == "gpu0@host-a")
    assert (busy["current_clip_id"], busy["current_clip"]) == expected["running"][0]
    assert {w["name"]: w["clips_done"] for w in workers} == {"cpu0@host-b": 0, **expected["done_by"]}
    assert [w["current_clip"] for w in workers if w["name"] != "gpu0@host-a"] == [None, None]

    tp = get(f"{base}/api/throughput")
    assert len(tp["buckets"]) == 144 and tp["bucket_seconds"] == 600
    in_window = [(n, at) for _, n, at in expected["done"] if at >= utcnow() - timedelta(hours=23, minutes=50)]
    assert tp["clips"] == len(in_window) == len(expected["done"]) - 1  # the 30-hour-old one is outside
    assert tp["frames"] == sum(n for n, _ in in_window)


def test_embedded_sqlite_database_is_served_too(farm, farm_env, tmp_path):
    """The single-machine default (SQLite) works with the same queries, bucketing included."""
    storage = tmp_path / "storage"
    storage.mkdir()
    farm_env(storage_url=str(storage), target_frames=str(TARGET))
    expected = fill(farm, storage)
    server = Background(get_settings())
    try:
        progress = get(f"{server.url}/api/progress")
        assert progress["frames_done"] == sum(n for _, n, _ in expected["done"])
        assert progress["body_out_of_frame"] == expected["out_of_frame"] > 0
        tp = get(f"{server.url}/api/throughput")
        assert tp["clips"] == len(expected["done"]) - 1
        assert tp["frames"] == sum(n for _, n, _ in expected["done"][1:])
        assert {f["reason"] for f in get(f"{server.url}/api/failures")["failures"]} == set(expected["failed"])
        with urllib.request.urlopen(f"{server.url}/", timeout=30) as response:
            assert "throughput-chart" in response.read().decode()
    finally:
        server.stop()


def test_bad_requests_get_a_clear_error(served):
    base, _, _ = served
    for path, status in (
        ("/api/clips?state=bogus", 400),
        ("/api/clips?limit=x", 400),
        ("/thumb/999999.jpg", 404),
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=30)
        assert info.value.code == status
        assert json.loads(info.value.read())["error"]


def test_metrics_parse_and_match(served):
    from prometheus_client.parser import text_string_to_metric_families

    base, expected, pg_url = served
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        body = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    clips = {s.labels["state"]: s.value for s in families["farm_clips"].samples}
    assert clips == {
        s: float(n) for s, n in sql(pg_url, "SELECT status, count(*) FROM clips GROUP BY status")
    }
    assert sum(s.value for s in families["farm_frames_done"].samples) == sum(
        n for _, n, _ in expected["done"]
    )
    assert families["farm_target_frames"].samples[0].value == TARGET
    hist = {s.name: s for s in families["farm_clip_render_seconds"].samples if not s.labels.get("le")}
    assert hist["farm_clip_render_seconds_count"].value == len(expected["done"])
    failed = {s.labels["reason"]: s.value for s in families["farm_clips_failed"].samples}
    assert failed == {r: len(n) for r, n in expected["failed"].items()}
    assert families["farm_workers_alive"].samples[0].value == 2
    assert families["farm_clips_body_out_of_frame"].samples[0].value == expected["out_of_frame"]


def test_thumbnails_are_jpegs_from_storage(served):
    base, expected, _ = served
    for clip_id, path in expected["thumbs"].items():
        with urllib.request.urlopen(f"{base}/thumb/{clip_id}.jpg", timeout=30) as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            assert response.read() == path.read_bytes()
    missing = next(clip_id for clip_id, _, _ in expected["done"] if clip_id not in expected["thumbs"])
    queued = expected["running"][0][0]
    for clip_id in (missing, queued):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{base}/thumb/{clip_id}.jpg", timeout=30)
        assert info.value.code == 404


class Dom(HTMLParser):
    """Just enough of the rendered DOM: elements by id, the thumbnails, the failure rows and the chart's bars."""

    VOID = {"img", "br", "meta", "link", "input", "hr", "source"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, Any]] = {}
        self.imgs: list[dict[str, str | None]] = []
        self.bars = 0
        self.stack: list[dict[str, Any]] = []
        self.rows: list[tuple[str | None, list[str]]] = []  # (the row's id, its cells' text)
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, "attrs": dict(attrs), "text": ""}
        if node["attrs"].get("id"):
            self.by_id[node["attrs"]["id"]] = node
        if tag == "img":
            self.imgs.append(node["attrs"])
        if tag == "rect" and node["attrs"].get("class") == "bucket":
            self.bars += 1
        if tag == "tr":
            self.rows.append((node["attrs"].get("id"), []))
        if tag == "td" and self.rows:
            self.rows[-1][1].append("")
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node["text"] += data
        if self.rows and self.rows[-1][1] and any(n["tag"] == "td" for n in self.stack):
            self.rows[-1][1][-1] += data

    def cells(self, row_id: str) -> list[str]:
        return next(cells for ident, cells in self.rows if ident == row_id)

    def value(self, ident: str) -> int:
        node = self.by_id[ident]
        shown = int(node["text"].replace(",", ""))
        assert shown == int(node["attrs"]["data-value"]), ident  # the text shown is the exact number
        return shown


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        service_missing("Chromium", FileNotFoundError(f"{CHROMIUM} (run `make system-deps`)"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=10000",  # let the thumbnails load before the DOM is read
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_dashboard_in_headless_chromium(served, tmp_path):
    base, expected, pg_url = served
    dom = Dom(chromium("--dump-dom", f"{base}/", tmp=tmp_path).stdout)

    states = dict(sql(pg_url, "SELECT status, count(*) FROM clips GROUP BY status"))
    for state in ("queued", "running", "done", "failed"):
        assert dom.value(f"state-{state}") == states[state]
    assert dom.value("frames-done") == sum(n for _, n, _ in expected["done"])
    assert dom.value("target-frames") == TARGET
    assert dom.value("body-out-of-frame") == expected["out_of_frame"]
    for split, run, clips_done, frames_done, frames_planned in sql(
        pg_url,
        "SELECT split, run, count(*) FILTER (WHERE status = 'done'), coalesce(sum(frames_done), 0), "
        "sum(frame_stop - frame_start) FROM clips GROUP BY split, run",
    ):
        shown = dom.cells(f"split-{split}-run{run}")
        assert [int(x.replace(",", "")) for x in shown[1:5]] == [
            clips_done,
            sql(pg_url, f"SELECT count(*) FROM clips WHERE split='{split}' AND run={run}")[0][0],
            frames_done,
            frames_planned,
        ]

    failure_rows = {
        c[0]: (int(c[1].replace(",", "")), c[2]) for _, c in dom.rows if c and c[0] in expected["failed"]
    }
    assert set(failure_rows) == set(expected["failed"])
    for reason, names in expected["failed"].items():
        assert failure_rows[reason][0] == len(names)
        assert sorted(failure_rows[reason][1].split(", ")) == sorted(names)

    assert dom.value("workers-seen") == 3 and dom.value("workers-alive") == 2
    assert dom.bars == len(
        {
            at.replace(second=0, microsecond=0, minute=at.minute // 10 * 10)
            for _, _, at in expected["done"][1:]
        }
    )
    thumbs = [img for img in dom.imgs if img.get("class") == "thumb"]
    assert len(thumbs) == min(12, len(expected["thumbs"]))
    assert all(int(img.get("data-loaded") or 0) > 0 for img in thumbs), thumbs  # naturalWidth after loading

    shot = tmp_path / "dashboard.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", f"{base}/", tmp=tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT:
        shutil.copy(shot, SCREENSHOT)
