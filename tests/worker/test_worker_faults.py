"""The worker's answers to failing clips, on SQLite and PostgreSQL: a failed attempt is offered again after a
growing delay (by the worker and by the reconciler), and a worker that fails clips in a row pauses itself,
hands deliveries back unclaimed while paused, says so in the database and in `farm status`, and comes back.

The producers here are stand-ins (no Blender): the protocol around them is the farm's own."""

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import builtin_clips_on
from sqlalchemy import Float, bindparam, select

from farm.core.db import db_now, session_scope
from farm.core.models import Clip, WorkerRecord
from farm.core.settings import get_settings
from farm.core.storage import open_storage
from worker import claims, process

pytestmark = pytest.mark.services


@pytest.fixture(params=["sqlite", "postgresql"])
def clips(request, farm, farm_env, tmp_path):
    """Six queued clips of the built-in catalog, on the embedded SQLite file and on PostgreSQL."""
    return builtin_clips_on(request.param, request, farm, farm_env, tmp_path, 6)


@pytest.fixture
def sent(monkeypatch):
    """The render messages the worker and the reconciler send: (clip ids, countdown)."""
    messages = []

    def record(app, ids, countdown=None):
        messages.append((list(ids), countdown))
        return len(messages[-1][0])

    monkeypatch.setattr(process, "send_render_tasks", record)
    monkeypatch.setattr("scheduler.reconcile.send_render_tasks", record)
    return messages


class Stand:
    """A producer that fails while `failing`, else writes one small file; and a clock to move by hand."""

    def __init__(self):
        self.failing = True
        self.now = 1000.0

    def produce(self, spec, folder: Path):
        if self.failing:
            raise RuntimeError("CUDA error: no device")
        relative = Path(spec.output_dir) / f"{spec.name}_stand-in.txt"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(spec.name)
        return [relative], spec.frame_count, None

    def context(self, name):
        settings = get_settings()
        guard = process.FastFailGuard(clock=lambda: self.now)
        return process.WorkerContext(settings, name, self.produce, open_storage(settings), guard=guard)


def status_of(url, clip_id):
    with session_scope(url) as session:
        clip = session.get(Clip, clip_id)
        return clip.status, clip.attempts


def test_retry_delay_doubles_up_to_its_cap():
    assert [claims.retry_delay(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert claims.retry_delay(9, 30) == claims.RETRY_DELAY_MAX_S
    assert claims.retry_delay(3, 0) == 0


def test_failed_attempts_are_offered_again_after_a_growing_delay(clips, sent, monkeypatch):
    url, ids = clips
    stand = Stand()
    ctx = stand.context("flaky:1")
    assert process.process_clip(ids[0], ctx) == "queued"
    assert process.process_clip(ids[0], ctx) == "queued"
    assert process.process_clip(ids[0], ctx) == "failed"  # FARM_MAX_ATTEMPTS=3: nothing more to send
    assert sent == [([ids[0]], 30.0), ([ids[0]], 60.0)]
    assert status_of(url, ids[0]) == ("failed", 3)

    # The reconciler's take-backs (a worker died holding the clip) are delayed the same way.
    from scheduler.reconcile import reconcile

    sent.clear()
    monkeypatch.setattr("scheduler.reconcile.check_broker", lambda app: None)
    monkeypatch.setattr("scheduler.reconcile.clips_in_broker", lambda app: ids)
    for _ in range(2):
        with session_scope(url) as session:
            claims.claim(session, ids[1], "dies:1", timedelta(seconds=0))
        time.sleep(0.01)  # the lease of 0 s is over in the database's time
        assert reconcile(get_settings())["taken_back"] == 1
    assert [m for m in sent if m[0]] == [([ids[1]], 30.0), ([ids[1]], 60.0)]


def test_a_worker_failing_clips_in_a_row_pauses_hands_clips_back_and_comes_back(
    clips, sent, farm, monkeypatch
):
    url, ids = clips
    monkeypatch.setattr(process, "PAUSED_HOLD_S", 0.0)
    stand = Stand()
    ctx = stand.context("flaky:1")
    for clip_id in ids[:3]:  # a broken GPU: three clips fail in a row, within five minutes
        stand.now += 30
        assert process.process_clip(clip_id, ctx) == "queued"
    assert ctx.guard.paused_for() == process.FAST_FAIL_PAUSE_S
    with session_scope(url) as session:
        worker = session.get(WorkerRecord, "flaky:1")
        assert "failed 3 clips in a row within 5 min" in worker.pause_reason
        assert "CUDA error: no device" in worker.pause_reason
        assert session.scalar(  # in the database's time, five minutes on
            select(WorkerRecord.paused_until > db_now(bindparam("s", type_=Float))), {"s": 240}
        )
    status = json.loads(farm("status", "--json").out)
    assert [w["name"] for w in status["paused_workers"]] == ["flaky:1"]
    assert "paused worker flaky:1 until" in " ".join(farm("status").out.split())
    from farm.core.db import utcnow
    from farm.dashboard.app import render_dashboard
    from farm.dashboard.metrics import metrics_text
    from farm.dashboard.queries import dashboard_data

    with session_scope(url) as session:
        page = render_dashboard(dashboard_data(session, 1000, utcnow()))
        metrics = metrics_text(session, 1000, utcnow()).decode()
    assert "paused-worker" in page and "failed 3 clips in a row" in page
    assert "farm_workers_paused 1.0" in metrics

    # While paused, a delivery goes straight back to the queue, unclaimed: no attempt is spent.
    sent.clear()
    assert process.process_clip(ids[3], ctx).startswith("skipped: this worker is paused")
    assert status_of(url, ids[3]) == ("queued", 0) and sent == [([ids[3]], None)]

    # After the pause it takes clips again by itself; failing on, it pauses twice as long.
    stand.now += process.FAST_FAIL_PAUSE_S
    for clip_id in ids[3:6]:
        assert process.process_clip(clip_id, ctx) == "queued"
    assert ctx.guard.paused_for() == 2 * process.FAST_FAIL_PAUSE_S
    assert status_of(url, ids[3]) == ("queued", 1)

    # A clip done ends the streak and the doubling, and clears the pause in the database.
    stand.now += 2 * process.FAST_FAIL_PAUSE_S
    stand.failing = False
    assert process.process_clip(ids[0], ctx) == "done"
    assert json.loads(farm("status", "--json").out)["paused_workers"] == []
    stand.failing = True
    for clip_id in ids[1:4]:
        process.process_clip(clip_id, ctx)
    assert ctx.guard.paused_for() == process.FAST_FAIL_PAUSE_S


def test_failures_spread_out_in_time_or_broken_by_a_success_do_not_pause():
    now = [0.0]
    guard = process.FastFailGuard(clock=lambda: now[0])
    for _ in range(5):  # one failure every three minutes: never three within five
        assert guard.failed("boom") is None
        now[0] += 180
    assert guard.failed("boom") is None
    guard.succeeded()
    assert guard.failed("boom") is None and guard.failed("boom") is None
    assert guard.failed("boom") == process.FAST_FAIL_PAUSE_S
    assert guard.paused_for() == process.FAST_FAIL_PAUSE_S and not guard.pause_ended()
    now[0] += process.FAST_FAIL_PAUSE_S
    assert guard.paused_for() == 0 and guard.pause_ended() and not guard.pause_ended()
