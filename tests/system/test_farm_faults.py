"""The farm's real faults with real processes and servers, each started by the test: a worker whose clock is
five minutes ahead (faketime), a PostgreSQL restart under a rendering worker, and a clip that always crashes
Blender on a farm of one worker. `farm worker` processes render short clips with Blender."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import running
from farm_cluster import (
    PrivatePostgres,
    Processes,
    blender_children,
    faketime_wrapper,
    wait_for,
    write_short_motions,
)
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

pytestmark = [pytest.mark.services, pytest.mark.blender, pytest.mark.slow]

LEASE_SECONDS = "6"


@pytest.fixture
def farm_settings(farm_env, redis_server, tmp_path):
    """The settings every test here shares: a private Redis, local storage, short leases and retry delays."""

    def configure(**settings):
        defaults = {"lease_seconds": LEASE_SECONDS, "retry_delay_s": "1"}
        farm_env(
            broker_url=redis_server.url, storage_url=str(tmp_path / "stored"), **{**defaults, **settings}
        )

    return configure


@pytest.fixture
def cluster(farm, pg_farm, pg_url, farm_settings, tmp_path):
    """The farm on this session's PostgreSQL database, with a place to start processes."""
    farm_settings(database_url=pg_url)
    processes = Processes(dict(os.environ), tmp_path)
    yield processes, pg_url
    processes.stop_all()


@pytest.fixture
def private_pg():
    yield from running(PrivatePostgres(), "a private PostgreSQL cluster (initdb and pg_ctl)")


def plan(farm, tmp_path, names, mocap_frames=40):
    """Import short motions (40 MoCap frames at 120 Hz: 10 frames a clip) and enqueue them; their ids."""
    folder = tmp_path / "motions"
    folder.mkdir(exist_ok=True)
    write_short_motions(folder, names, mocap_frames)
    assert farm("catalog", "import", "amass", str(folder), "--name", "short").code == 0
    result = farm("enqueue", "--sequences", "short_all", "--runs", "0", "--json")
    assert result.code == 0 and json.loads(result.out)["new_clips"] == len(names), result.err
    return [r["id"] for r in clips(farm_url())]


def farm_url():
    from farm.core.settings import get_settings

    return get_settings().database_url


def query(url, sql, **params):
    engine = create_engine(url, poolclass=NullPool)  # no pooled connection survives a restart
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def clips(url):
    return query(url, "SELECT id, name, status, attempts, worker, error FROM clips ORDER BY id")


def events(url, clip_id):
    rows = query(
        url,
        "SELECT from_status, to_status, worker FROM clip_events WHERE clip_id = :c ORDER BY id",
        c=clip_id,
    )
    return [(r["from_status"], r["to_status"], r["worker"]) for r in rows]


def all_finished(url):
    rows = clips(url)
    return rows if rows and all(r["status"] in ("done", "failed") for r in rows) else None


def five_minutes_ahead(root):
    """faketime's command prefix for a clock five minutes ahead. Only the wall clock is faked: a machine
    whose clock is off still has a steady monotonic clock, and faking that one too (faketime's default) makes
    Python's timed waits hang (see farm_cluster.faketime_wrapper)."""
    try:
        return faketime_wrapper(root, "+5m")
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; under CI=true nothing is skipped")
        pytest.skip(str(exc))


def test_a_worker_five_minutes_ahead_and_a_normal_one_render_each_clip_once(farm, cluster, tmp_path):
    """Every clip is delivered twice, so both workers try every clip. With leases in the database's time the
    worker whose clock is five minutes ahead never sees the other's live lease as expired: each clip is
    claimed once, by one worker at a time, and done once."""
    processes, url = cluster
    ahead = five_minutes_ahead(tmp_path)
    probe = "import threading, time; time.sleep(0.01); threading.Event().wait(0.01); print(time.time(), time.monotonic())"
    out = subprocess.run(
        [*ahead, sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert 240 < float(out[0]) - time.time() < 360, "Python's clock under faketime is not 5 minutes ahead"
    assert abs(float(out[1]) - time.monotonic()) < 60, "faketime shifted the monotonic clock too"

    ids = plan(farm, tmp_path, ["20_01", "20_02", "20_03", "20_04"])
    from farm.core.celery_app import celery_for, send_render_tasks
    from farm.core.settings import get_settings

    send_render_tasks(celery_for(get_settings()), ids)  # a second delivery of every clip
    # No retry delays here: Celery turns a countdown into an eta on the sender's clock, so a clip the ahead
    # worker gave back would wait five minutes on the normal one (a delay, never a double render; README).
    processes.worker("ahead", wrapper=ahead, FARM_RETRY_DELAY_S="0")
    processes.worker("normal", FARM_RETRY_DELAY_S="0")
    rows = wait_for(lambda: all_finished(url), 300, "all clips to finish")
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()
    for row in rows:
        log = events(url, row["id"])
        assert [e[1] for e in log] == ["queued", "running", "done"], (row["name"], log)
        assert row["attempts"] == 1 and log[1][2] == log[2][2] == row["worker"]
    workers = query(
        url,
        "SELECT name, last_seen_at < now() + interval '5 seconds' AS in_db_time FROM workers ORDER BY name",
    )
    assert [w["name"].split(":")[0] for w in workers] == ["ahead", "normal"]  # both had deliveries
    assert all(w["in_db_time"] for w in workers)  # the heartbeats too are in the database's time


def test_a_database_restart_under_a_rendering_worker_costs_no_attempt(
    farm, farm_settings, private_pg, tmp_path
):
    """The test's own PostgreSQL is restarted while the worker renders. The lease is long, so no renewal
    comes between the restart and the completion, which finds its pooled connection dropped, waits for the
    server and runs once more. Every clip ends done, and the one rendering across the restart with its one
    attempt."""
    url = private_pg.url
    farm_settings(database_url=url, lease_seconds="120")
    assert farm("db", "upgrade").code == 0
    ids = plan(farm, tmp_path, ["21_01", "21_02"], mocap_frames=160)  # 40 frames each
    processes = Processes(dict(os.environ), tmp_path)
    try:
        processes.worker("worker")
        rendering = wait_for(
            lambda: [r for r in clips(url) if r["status"] == "running"], 300, "a clip to start rendering"
        )
        private_pg.restart()
        rows = wait_for(lambda: all_finished(url), 300, "all clips to finish")
    finally:
        processes.stop_all()
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()
    by_id = {r["id"]: r for r in rows}
    assert by_id[rendering[0]["id"]]["attempts"] == 1, processes.log_tail()
    for clip_id in ids:
        assert [e[1] for e in events(url, clip_id)] == ["queued", "running", "done"]
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "the database dropped the connection" in log  # the restart was felt, and survived


def test_one_worker_and_a_clip_that_always_crashes_blender_end_failed_after_max_attempts(
    farm, cluster, tmp_path
):
    """A farm of one worker: the host that failed the clip twice is the only one there is, so it takes it a
    third time (FARM_MAX_ATTEMPTS=3), and the clip ends failed with its reason, never stuck in `queued`.
    Failing three clips in a row, the worker then pauses itself, and says so in `farm status`."""
    processes, url = cluster
    processes.env["FARM_MAX_ATTEMPTS"] = "3"
    (clip_id,) = plan(farm, tmp_path, ["22_01"], mocap_frames=200)
    processes.worker("solo")
    processes.start("reconciler", "reconcile", "--every", "2")

    def crash_it():
        """Every time the clip is rendering, its Blender dies of a segmentation fault."""
        rows = clips(url)
        if rows[0]["status"] == "running":
            for pid in blender_children(int(rows[0]["worker"].rsplit(":", 1)[1])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSEGV)
        return all_finished(url)

    (row,) = wait_for(crash_it, 300, "the clip to end", every=0.5)
    assert (row["status"], row["attempts"]) == ("failed", 3), processes.log_tail()
    assert "RenderError" in row["error"], row["error"]
    log = events(url, clip_id)
    assert [e[1] for e in log] == ["queued", "running", "queued", "running", "queued", "running", "failed"]
    assert {e[2].split(":")[0] for e in log[1:]} == {"solo"}
    status = json.loads(farm("status", "--json").out)
    assert status["clips"]["failed"] == 1 and "RenderError" in status["failures"][0]["reason"]
    paused = wait_for(lambda: json.loads(farm("status", "--json").out)["paused_workers"], 30, "the pause")
    assert paused[0]["name"].startswith("solo:") and "failed 3 clips in a row" in paused[0]["reason"]
