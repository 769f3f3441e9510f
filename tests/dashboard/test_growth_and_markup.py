"""What the bookkeeping shows stays bounded and inert: failure reasons group by cause (not one group per clip),
gone workers drop out of /api/workers and /metrics (and their rows are pruned, the clips' history kept), text
from the database prints through `farm status` as text (rich markup, escape sequences), and every response
says nosniff."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from bookkeeper_server import Background
from conftest import builtin_clips_on
from sqlalchemy import select, update

from farm.core.db import session_scope, utcnow
from farm.core.models import Clip, ClipStatus, WorkerRecord
from farm.core.settings import get_settings
from farm.dashboard.app import thumbnail_key


def test_quality_gate_failures_of_two_clips_group_as_one(farm, farm_env, tmp_path):
    """Two clips fail the gate for the same cause: the stored reasons hold neither clip's name nor its scratch
    folder, so /api/failures, `farm status` and /metrics show one group of two clips."""
    from farm.core.storage import open_storage
    from farm.dashboard.queries import failures
    from worker.process import WorkerContext, process_clip
    from worker.qc import Quality

    farm_env(max_attempts="1", storage_url=str(tmp_path / "out"))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "2").code == 0

    def produce(spec, folder):
        segm = folder / spec.output_dir / f"{spec.name}_segm.mat"
        segm.parent.mkdir(parents=True, exist_ok=True)
        segm.write_bytes(b"written, then found bad")
        problem = f"{spec.name}_segm.mat holds labels 0..99 in frame 1 (at {segm}), want 0..24."
        Quality({}, [problem]).raise_for_problems(spec.name)

    settings = get_settings()
    context = WorkerContext(settings, "gate-test:1", produce, open_storage(settings))
    assert [process_clip(i, context) for i in (1, 2)] == ["failed", "failed"]
    with session_scope(settings.database_url) as session:
        names = sorted(session.scalars(select(Clip.name)))
        errors = set(session.scalars(select(Clip.error)))
        (group,) = failures(session)
    (reason,) = errors
    assert reason.startswith(
        "QualityError: <clip> failed the quality gate: <clip>_segm.mat holds labels 0..99"
    )
    assert not any(name in reason for name in names) and "(at <scratch>/builtin/" in reason, reason
    assert (group["clips"], sorted(group["names"])) == (2, names)
    status = json.loads(farm("status", "--json").out)
    assert [f["clips"] for f in status["failures"]] == [2]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_clips(request, farm, farm_env, tmp_path):
    return builtin_clips_on(request.param, request, farm, farm_env, tmp_path, 2)


def test_workers_gone_for_a_day_are_not_listed_and_are_pruned(two_clips):
    """Pool processes come and go (host:pid): rows stopped or silent for over a day leave /api/workers and
    /metrics at once, and the next new worker deletes them; the clips they finished still name them."""
    from farm.dashboard.metrics import metrics_text
    from farm.dashboard.queries import workers
    from worker import claims

    url, ids = two_clips
    now = utcnow()
    with session_scope(url) as session:
        for n, (seen, stopped) in enumerate([(2, 2), (3, None), (0, None)]):  # days ago
            session.add(
                WorkerRecord(
                    name=f"host-a:{100 + n}", hostname="host-a", device="cpu", started_at=now - timedelta(days=4),
                    last_seen_at=now - timedelta(days=seen, minutes=1),
                    stopped_at=None if stopped is None else now - timedelta(days=stopped),
                )
            )  # fmt: skip
        session.execute(
            update(Clip).where(Clip.id == ids[0]).values(status=ClipStatus.DONE, worker="host-a:100")
        )
    with session_scope(url) as session:
        listed = [w["name"] for w in workers(session, utcnow())]
        metrics = metrics_text(session, 1000, utcnow()).decode()
    assert listed == ["host-a:102"]
    assert "host-a:100" not in metrics and "host-a:101" not in metrics and 'worker="host-a:102"' in metrics
    assert "farm_workers_seen 1.0" in metrics

    with session_scope(url) as session:
        claims.heartbeat(session, "host-a:103", "cpu")  # a recycled pool process says hello
    with session_scope(url) as session:
        kept = sorted(session.scalars(select(WorkerRecord.name)))
        history = session.scalar(select(Clip.worker).where(Clip.id == ids[0]))
    assert kept == ["host-a:102", "host-a:103"]
    assert history == "host-a:100"


HOSTILE_REASON = "RenderError: cannot open [/data/bg.jpg] [bold red]x[/] \x1b[2J\x1b]0;owned\x07 done\r"


def test_farm_status_prints_markup_and_escape_sequences_as_inert_text(farm, farm_env):
    """A failure reason and a pause reason holding rich markup (`[/data/bg.jpg]` closed no tag: it crashed the
    command) and terminal escape sequences print as text, without a single raw control character."""
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "2").code == 0
    url = get_settings().database_url
    now = utcnow()
    with session_scope(url) as session:
        session.execute(update(Clip).values(status=ClipStatus.FAILED, error=HOSTILE_REASON))
        session.add(
            WorkerRecord(
                name="gpu[0]@\x1b[31mhost", hostname="h", device="cpu", started_at=now, last_seen_at=now,
                paused_until=now + timedelta(hours=1), pause_reason="failed [/data/bg.jpg] \x1b[5m",
            )
        )  # fmt: skip
    run = farm("status")
    assert run.code == 0, run.err
    text = run.out
    assert "failed 2 clips: RenderError: cannot open [/data/bg.jpg] [bold red]x[/]" in text
    assert "paused worker gpu[0]@\ufffd[31mhost until" in text and "failed [/data/bg.jpg] \ufffd[5m" in text
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in text), repr(text)


def test_every_response_says_nosniff(farm, farm_env, tmp_path):
    """A thumbnail is bytes from storage (anyone with the bucket's credentials wrote them): the browser must
    take it as the image/jpeg it is said to be, never sniff it into HTML. So must JSON, errors and the page."""
    storage = tmp_path / "storage"
    farm_env(storage_url=str(storage))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "2").code == 0
    url = get_settings().database_url
    with session_scope(url) as session:
        clip, climbing = session.scalars(select(Clip).order_by(Clip.id)).all()
        clip.status, clip.finished_at = ClipStatus.DONE, utcnow()
        thumb = storage / thumbnail_key(clip.spec)
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(b"<html><script>alert(1)</script></html>")  # not a JPEG at all
        clip_id = clip.id
        # A done clip whose spec names a thumbnail outside the storage: no thumbnail, not a server error.
        climbing.status, climbing.spec = ClipStatus.DONE, {**climbing.spec, "name": "../../../x_thumb"}
        climbing_id = climbing.id
    server = Background(get_settings())
    try:
        for route, status in [
            (f"/thumb/{clip_id}.jpg", 200), ("/thumb/999.jpg", 404), (f"/thumb/{climbing_id}.jpg", 404),
            ("/api/progress", 200),
            ("/api/clips?state=nope", 400), ("/", 200), ("/metrics", 200), ("/healthz", 200),
        ]:  # fmt: skip
            response = requests.get(server.url + route, timeout=30)
            assert response.status_code == status, route
            assert response.headers.get("X-Content-Type-Options") == "nosniff", route
        response = requests.get(f"{server.url}/thumb/{clip_id}.jpg", timeout=30)
        assert response.headers["Content-Type"] == "image/jpeg"
    finally:
        server.stop()
