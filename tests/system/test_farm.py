"""The farm end to end on real servers: PostgreSQL, a private Redis, SeaweedFS, `farm worker` processes
rendering with Blender, and the faults a long run meets: killed workers, a broker that loses its data, an
S3 outage, duplicate deliveries and a clip that always crashes Blender.
"""

import contextlib
import hashlib
import json
import os
import signal
import time

import pytest
from farm_cluster import Processes, blender_children, wait_for, write_short_motions
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.services, pytest.mark.blender, pytest.mark.slow]

LEASE_SECONDS = 6


@pytest.fixture
def cluster(farm, pg_farm, pg_url, redis_server, seaweed, s3_credentials, tmp_path):
    """The farm's settings for this test, no clips yet, and a place to start processes."""
    prefix = f"t{int(time.time() * 1000)}"
    pg_farm(
        broker_url=redis_server.url,
        storage_url=f"s3://{seaweed.bucket}/{prefix}",
        lease_seconds=str(LEASE_SECONDS),
        retry_delay_s="1",  # failed attempts are offered again after 1 s, 2 s, ... (30 s, 60 s by default)
        upload_retry_s="90",
        **s3_credentials,
    )
    processes = Processes(dict(os.environ), tmp_path)
    processes.prefix = prefix
    yield processes, pg_url, seaweed
    processes.stop_all()
    seaweed.ensure_running()


def plan(farm, tmp_path, names, mocap_frames=40, runs="0"):
    """Import short motions and enqueue them; returns the clip ids."""
    folder = tmp_path / "motions"
    folder.mkdir(exist_ok=True)
    write_short_motions(folder, names, mocap_frames)
    assert farm("catalog", "import", "amass", str(folder), "--name", "short").code == 0
    result = farm("enqueue", "--sequences", "short_all", "--runs", runs, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["new_clips"]


def clips(pg_url):
    with create_engine(pg_url).connect() as conn:
        rows = conn.execute(
            text("SELECT id, name, status, attempts, worker, error, checksums FROM clips ORDER BY id")
        )
        return [dict(r._mapping) for r in rows]


def events(pg_url, to_status):
    with create_engine(pg_url).connect() as conn:
        rows = conn.execute(
            text("SELECT clip_id, count(*) FROM clip_events WHERE to_status = :s GROUP BY clip_id"),
            {"s": to_status},
        )
        return dict(rows.all())


def all_finished(pg_url):
    rows = clips(pg_url)
    return rows if rows and all(r["status"] in ("done", "failed") for r in rows) else None


def assert_stored_with_checksums(seaweed, prefix, rows):
    """Every recorded object is in the bucket, read back directly, with the recorded size and sha256."""
    s3 = seaweed.client()
    for row in rows:
        assert row["checksums"], row["name"]
        for key, info in row["checksums"].items():
            body = s3.get_object(Bucket=seaweed.bucket, Key=f"{prefix}/{key}")["Body"].read()
            assert (len(body), hashlib.sha256(body).hexdigest()) == (info["size"], info["sha256"]), key


def test_every_clip_is_rendered_stored_and_done_once(farm, cluster, tmp_path):
    processes, pg_url, seaweed = cluster
    new = plan(farm, tmp_path, ["07_01", "07_02"], runs="0,1,2")
    assert new == 6
    processes.worker("worker-a")
    processes.worker("worker-b")
    rows = wait_for(lambda: all_finished(pg_url), 600, "all clips to finish")
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()
    assert set(events(pg_url, "done").values()) == {1} and len(events(pg_url, "done")) == 6
    assert {name.rsplit("_c", 1)[0] for name in (r["name"] for r in rows)} == {"07_01", "07_02"}
    assert_stored_with_checksums(seaweed, processes.prefix, rows)
    names = {key.rsplit("/", 1)[-1] for r in rows for key in r["checksums"]}
    assert {
        "07_01_c0001.mp4",
        "07_01_c0001_info.mat",
        "07_01_c0001_segm.mat",
        "07_01_c0001_thumb.jpg",
    } <= names
    verify = farm("verify", "--json")
    assert (
        verify.code == 0
        and json.loads(verify.out)["missing"] == []
        and json.loads(verify.out)["corrupt"] == []
    )
    status = json.loads(farm("status", "--json").out)
    assert status["clips"]["done"] == 6 and status["frames_done"] == 6 * 10  # 40 MoCap frames at 120 Hz
    with create_engine(pg_url).connect() as conn:  # the quality gate's statistics, kept with each clip
        stats = conn.execute(text("SELECT qc, frames_with_body FROM clips")).all()
    assert all(qc["frames"] == 10 and qc["frames_with_body"] == body for qc, body in stats), stats
    qc = farm("qc", "--json")  # recomputed from the files in S3
    assert qc.code == 0 and sorted(c["clip"] for c in json.loads(qc.out)) == sorted(r["name"] for r in rows)
    with create_engine(pg_url).connect() as conn:
        workers = conn.execute(text("SELECT count(*) FROM workers")).scalar()
        done_by_them = conn.execute(
            text(
                "SELECT count(*) FROM clips JOIN workers ON clips.worker = workers.name WHERE status = 'done'"
            )
        ).scalar()
    assert (workers, done_by_them) == (2, 6)  # both heartbeat, and each done clip names one of them


def test_a_worker_killed_mid_clip_is_replaced_and_the_clip_done_once(farm, cluster, tmp_path):
    processes, pg_url, _ = cluster
    plan(farm, tmp_path, ["08_01"], mocap_frames=400)  # one clip of 100 frames: long enough to kill it
    doomed = processes.worker("doomed")
    running = wait_for(
        lambda: [r for r in clips(pg_url) if r["status"] == "running"], 300, "the clip to start"
    )
    time.sleep(2)
    processes.kill(doomed, signal.SIGKILL)
    processes.worker("rescuer")
    processes.start("reconciler", "reconcile", "--every", "2")
    rows = wait_for(lambda: all_finished(pg_url), 600, "the clip to finish")
    assert rows[0]["status"] == "done" and rows[0]["attempts"] == 2, processes.log_tail()
    assert rows[0]["worker"] != running[0]["worker"]
    assert events(pg_url, "done") == {rows[0]["id"]: 1} and events(pg_url, "running") == {rows[0]["id"]: 2}


def test_redis_losing_its_data_loses_no_clip(farm, cluster, tmp_path, redis_server):
    processes, pg_url, _ = cluster
    assert plan(farm, tmp_path, ["09_01", "09_02"]) == 2
    redis_server.restart_empty()
    assert farm("reconcile").code == 0
    processes.worker("worker")
    rows = wait_for(lambda: all_finished(pg_url), 600, "all clips to finish")
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()


def test_an_s3_outage_delays_uploads_and_nothing_is_done_without_its_files(farm, cluster, tmp_path):
    processes, pg_url, seaweed = cluster
    plan(farm, tmp_path, ["10_01"], mocap_frames=200)
    processes.worker("worker")
    wait_for(lambda: [r for r in clips(pg_url) if r["status"] == "running"], 300, "the clip to start")
    seaweed.stop()
    try:
        time.sleep(15)  # rendering ends and uploads start failing
        assert [r["status"] for r in clips(pg_url)] == ["running"]
    finally:
        seaweed.start()
    rows = wait_for(lambda: all_finished(pg_url), 300, "the clip to finish")
    assert rows[0]["status"] == "done" and rows[0]["attempts"] == 1, processes.log_tail()
    assert farm("verify").code == 0


def test_a_duplicate_message_renders_and_completes_once(farm, cluster, tmp_path):
    processes, pg_url, _ = cluster
    plan(farm, tmp_path, ["11_01"])
    from farm.core.celery_app import celery_for, send_render_tasks
    from farm.core.settings import get_settings

    clip_id = clips(pg_url)[0]["id"]
    send_render_tasks(celery_for(get_settings()), [clip_id, clip_id])  # two more deliveries of the same clip
    processes.worker("worker-a")
    processes.worker("worker-b")
    rows = wait_for(lambda: all_finished(pg_url), 300, "the clip to finish")
    time.sleep(3)  # let the duplicates arrive
    assert rows[0]["status"] == "done" and rows[0]["attempts"] == 1
    assert events(pg_url, "running") == {clip_id: 1} and events(pg_url, "done") == {clip_id: 1}


def test_a_clip_that_always_crashes_blender_ends_failed_and_the_others_finish(farm, cluster, tmp_path):
    processes, pg_url, _ = cluster
    plan(farm, tmp_path, ["12_01", "12_02", "12_03"], mocap_frames=200)
    cursed = clips(pg_url)[1]
    processes.worker("worker-a")
    processes.worker("worker-b")
    processes.start("reconciler", "reconcile", "--every", "2")

    def crash_cursed_clip():
        """Every time the cursed clip is rendering, its Blender dies of a segmentation fault."""
        row = next(r for r in clips(pg_url) if r["id"] == cursed["id"])
        if row["status"] == "running":
            for pid in blender_children(int(row["worker"].rsplit(":", 1)[1])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSEGV)
        return all_finished(pg_url)

    rows = wait_for(crash_cursed_clip, 600, "all clips to finish", every=0.5)
    by_id = {r["id"]: r for r in rows}
    assert by_id[cursed["id"]]["status"] == "failed", processes.log_tail()
    assert by_id[cursed["id"]]["attempts"] == 3 and "RenderError" in by_id[cursed["id"]]["error"]
    assert all(r["status"] == "done" for r in rows if r["id"] != cursed["id"])
    status = json.loads(farm("status", "--json").out)
    assert status["clips"]["failed"] == 1 and status["failures"][0]["clips"] == 1


def test_a_stopped_blender_costs_one_attempt_and_every_clip_keeps_its_own_frames(farm, cluster, tmp_path):
    """The user's fault: the worker's Blender is stopped (SIGSTOP) for longer than the clip time limit, then
    resumed. The renderer gives up on that clip and kills the stopped child, so no late reply of it completes
    another clip: every clip is done once, with its own non-blank frames."""
    import io

    import numpy as np
    import scipy.io

    processes, pg_url, seaweed = cluster
    processes.env["FARM_CLIP_TIME_LIMIT_S"] = "10"  # the renderer gives up after 8 s, Celery's soft limit 9 s
    assert plan(farm, tmp_path, ["13_01", "13_02", "13_03"]) == 3  # 10 frames each
    processes.worker("worker")
    processes.start("reconciler", "reconcile", "--every", "2")

    def a_warm_blender_on_a_later_clip():
        rows = clips(pg_url)
        running = [r for r in rows if r["status"] == "running"]
        if running and any(r["status"] == "done" for r in rows):
            return blender_children(int(running[0]["worker"].rsplit(":", 1)[1]))
        return None

    stopped = wait_for(a_warm_blender_on_a_later_clip, 300, "a second clip to start", every=0.1)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(11)  # longer than the clip time limit
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):  # the renderer has killed it
            os.kill(pid, signal.SIGCONT)

    rows = wait_for(lambda: all_finished(pg_url), 300, "all clips to finish")
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()
    assert events(pg_url, "done") == {r["id"]: 1 for r in rows}
    with create_engine(pg_url).connect() as conn:
        given_back = conn.execute(
            text("SELECT detail FROM clip_events WHERE from_status = 'running' AND to_status = 'queued'")
        ).scalars()
        reasons = list(given_back)
    assert len(reasons) == 1, reasons  # the stopped clip, given back once with why
    assert "took longer than 8 s" in reasons[0] or "SoftTimeLimitExceeded" in reasons[0]
    assert not any(os.path.exists(f"/proc/{pid}") for pid in stopped)  # killed, not resumed
    assert_stored_with_checksums(seaweed, processes.prefix, rows)
    s3 = seaweed.client()

    def stored(key):
        return s3.get_object(Bucket=seaweed.bucket, Key=f"{processes.prefix}/{key}")["Body"].read()

    segm_files = set()
    for row in rows:
        name, keys = row["name"], {k.rsplit("/", 1)[-1]: k for k in row["checksums"]}
        assert json.loads(stored(keys[f"{name}_manifest.json"]))["clip"] == name
        info = scipy.io.loadmat(io.BytesIO(stored(keys[f"{name}_info.mat"])))
        assert str(info["sequence"][0]) == name
        segm = scipy.io.loadmat(io.BytesIO(stored(keys[f"{name}_segm.mat"])))
        frames = [segm[f"segm_{t}"] for t in range(1, 11)]
        assert "segm_11" not in segm and all((np.asarray(f) > 0).sum() > 100 for f in frames), name
        segm_files.add(row["checksums"][keys[f"{name}_segm.mat"]]["sha256"])
    assert len(segm_files) == len(rows)  # no clip holds another's frames


def test_status_dashboard_and_metrics_agree_on_the_rendering_rate_and_a_stopped_worker_is_gone(
    farm, cluster, tmp_path
):
    """The rate is frames over the time spent rendering (not over the hour), the same in `farm status`, the
    dashboard's JSON and /metrics; a worker stopped with SIGTERM is shown gone at once."""
    import re
    import urllib.request

    from bookkeeper_server import Background

    from farm.core.settings import get_settings

    processes, pg_url, _ = cluster
    assert plan(farm, tmp_path, ["07_01", "07_02"]) == 2
    worker = processes.worker("worker-a")
    rows = wait_for(lambda: all_finished(pg_url), 600, "both clips to finish")
    assert {r["status"] for r in rows} == {"done"}, processes.log_tail()
    log = (tmp_path / "worker-a.log").read_text()
    for row in rows:  # each clip's start and end are logged with its name, frames and time
        assert re.search(rf"clip {row['id']} \({row['name']}, 10 frames, attempt 1\) starts", log), log
        assert re.search(rf"clip {row['id']} \({row['name']}\) done: 10 frames in [\d.]+ s", log), log

    # One worker renders one clip at a time, so the time spent rendering is the sum of the clips' own spans.
    with create_engine(pg_url).connect() as conn:
        rendering = conn.execute(
            text("SELECT sum(extract(epoch FROM finished_at - started_at)) FROM clips WHERE status = 'done'")
        ).scalar()
    expected_rate = 20 / float(rendering)
    assert expected_rate > 20 / 3600 * 10  # far from frames over the whole hour's window

    status = json.loads(farm("status", "--json").out)
    target = get_settings().target_frames
    assert status["throughput"]["frames_per_second"] == pytest.approx(expected_rate, rel=1e-3)
    assert status["eta_seconds"] == pytest.approx((target - 20) / expected_rate, rel=1e-3)
    server = Background(get_settings())
    try:

        def fetch(path):
            with urllib.request.urlopen(server.url + path, timeout=30) as response:
                return response.read().decode()

        progress = json.loads(fetch("/api/progress"))
        assert progress["throughput"]["frames_per_second"] == pytest.approx(expected_rate, rel=1e-3)
        assert progress["eta_seconds"] == pytest.approx(status["eta_seconds"], rel=1e-3)
        metrics = fetch("/metrics")
        value = {
            name: float(v)
            for name, v in re.findall(r"^(farm_frames_per_second|farm_eta_seconds) (\S+)$", metrics, re.M)
        }
        assert value["farm_frames_per_second"] == pytest.approx(expected_rate, rel=1e-3)
        assert value["farm_eta_seconds"] == pytest.approx(status["eta_seconds"], rel=1e-3)
        assert [w["alive"] for w in json.loads(fetch("/api/workers"))["workers"]] == [True]

        os.killpg(worker.pid, signal.SIGTERM)  # as `docker compose stop` or systemd stop it
        worker.wait(60)
        (gone,) = json.loads(fetch("/api/workers"))["workers"]
        assert gone["alive"] is False and gone["stopped_at"], gone
        assert re.search(r"^farm_workers_alive 0\.0$", fetch("/metrics"), re.M)
    finally:
        server.stop()
