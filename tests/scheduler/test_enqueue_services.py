"""`farm enqueue` and `farm status` at the paper's scale on the real PostgreSQL and Redis servers."""

import json
import re

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.services

TABLE1 = {  # clips per run and split, from shared/surreal-reference/README.md
    0: {"train": 16_563, "test": 3_814},
    1: {"train": 25_754, "test": 5_700},
    2: {"train": 12_684, "test": 3_014},
}
FULL = {
    "clips": {"train": 55_001, "test": 12_528, "total": 67_529},
    "frames": {"train": 5_342_090, "test": 1_194_662, "total": 6_536_752},
}


@pytest.fixture
def cluster(farm, pg_farm, pg_url, redis_client, render_queue, surreal_npz):
    """The farm on this session's PostgreSQL database (emptied) and a private Redis queue, with cmu imported."""
    assert farm("catalog", "import", "surreal", str(surreal_npz)).code == 0
    return redis_client, render_queue, pg_url


def count(pg_url, table):
    with create_engine(pg_url).connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_dry_run_reports_the_papers_plan_and_writes_nothing(farm, cluster):
    redis, queue, pg_url = cluster
    result = farm("enqueue", "--sequences", "cmu_all", "--dry-run", "--json")
    assert result.code == 0
    assert json.loads(result.out) == {**FULL, "new_clips": 67_529}  # what it would add: all of it
    for run, clips in TABLE1.items():
        per_run = json.loads(
            farm("enqueue", "--sequences", "cmu_all", "--runs", str(run), "--dry-run", "--json").out
        )
        assert per_run["clips"] == {**clips, "total": sum(clips.values())}
    assert count(pg_url, "clips") == 0 and redis.llen(queue) == 0


def test_enqueue_stores_and_queues_every_clip_once(farm, cluster):
    redis, queue, pg_url = cluster
    first = farm("enqueue", "--sequences", "cmu_all", "--json")
    assert first.code == 0, first.err
    assert json.loads(first.out) == {**FULL, "new_clips": 67_529}
    assert count(pg_url, "clips") == 67_529 and count(pg_url, "clip_events") == 67_529
    assert redis.llen(queue) == 67_529

    again = farm("enqueue", "--sequences", "cmu_all", "--json")
    assert json.loads(again.out) == {**FULL, "new_clips": 0}
    assert count(pg_url, "clips") == 67_529 and redis.llen(queue) == 67_529

    with create_engine(pg_url).connect() as conn:
        ids = {row[0] for row in conn.execute(text("SELECT id FROM clips"))}
        spec = conn.execute(text("SELECT spec FROM clips WHERE name = '01_01_c0001' AND run = 0")).scalar()
    queued = {json.loads(json.loads(m)["headers"]["argsrepr"])[0] for m in redis.lrange(queue, 0, -1)}
    assert queued == ids  # one message per stored clip, no more, no fewer
    assert spec["motion"]["pose_key"] == "pose_01_01"
    assert re.search(
        r"smpl_data\.npz#(female|male)shapes#\d+$", spec["shape_source"]
    )  # SURREAL's CAESAR bank

    status = json.loads(farm("status", "--json").out)
    assert status["target_frames"] == 6_536_752 and status["frames_done"] == 0
    assert status["clips"] == {"queued": 67_529, "running": 0, "done": 0, "failed": 0}
    assert status["splits"]["train"]["frames_planned"] == 5_342_090
    assert status["splits"]["test"]["runs"]["run1"]["clips_planned"] == 5_700
    assert status["eta_seconds"] is None


def test_limit_split_and_names_select_part_of_the_plan(farm, cluster):
    redis, queue, pg_url = cluster
    result = json.loads(farm("enqueue", "--sequences", "01_01,ung_07_02", "--runs", "0", "--json").out)
    assert result["clips"] == {"train": 13, "test": 1, "total": 14} and result["new_clips"] == 14
    limited = json.loads(
        farm("enqueue", "--sequences", "cmu_all", "--split", "test", "--limit", "5", "--json").out
    )
    assert limited["clips"] == {"train": 0, "test": 5, "total": 5}
    assert limited["new_clips"] == 5
    assert redis.llen(queue) == 19 and count(pg_url, "clips") == 19


def test_unreachable_broker_writes_nothing(farm, farm_env, cluster):
    redis, queue, pg_url = cluster
    farm_env(broker_url="redis://127.0.0.1:1/0")
    result = farm("enqueue", "--sequences", "cmu_all")
    assert result.code == 4 and "cannot reach the broker at redis://127.0.0.1:1/0" in result.err
    assert count(pg_url, "clips") == 0


def test_status_counts_states_frames_failures_and_throughput(farm, cluster):
    redis, queue, pg_url = cluster
    farm("enqueue", "--sequences", "01_01", "--json")
    with create_engine(pg_url).begin() as conn:
        conn.execute(text(
            "UPDATE clips SET status = 'done', frames_done = frame_stop - frame_start, finished_at = now(), "
            "started_at = now() - make_interval(secs => 10 * id) WHERE id IN (SELECT id FROM clips ORDER BY id LIMIT 4)"
        ))  # fmt: skip
        conn.execute(text("UPDATE clips SET status = 'failed', error = 'Blender crashed' WHERE id IN (5, 6)"))
        conn.execute(text("UPDATE clips SET status = 'running' WHERE id = 7"))
        done_frames = conn.execute(text("SELECT sum(frames_done) FROM clips WHERE status = 'done'")).scalar()
    status = json.loads(farm("status", "--json").out)
    assert status["clips"] == {"queued": 44 - 7, "running": 1, "done": 4, "failed": 2}
    assert status["frames_done"] == done_frames == 400
    assert status["failures"] == [{"reason": "Blender crashed", "clips": 2}]
    assert status["throughput"]["frames"] == 400 and status["eta_seconds"] > 0
    # Clips 1-4 rendered side by side for 10-40 s up to now: 40 s of rendering, 10 frames/s.
    assert status["throughput"]["frames_per_second"] == pytest.approx(10.0, rel=1e-3)
    human = farm("status")
    assert human.code == 0 and "400 of 6,536,752 frames done" in human.out and "Blender crashed" in human.out


def test_people_per_clip_are_drawn_stored_and_one_person_plans_unchanged(farm, cluster):
    """--people 2-4 on PostgreSQL: every clip holds 2..4 people with windows of the catalog's train sequences;
    the first person of each is the clip a one-person plan draws."""
    redis, queue, pg_url = cluster
    args = ("--sequences", "01_01", "--runs", "0", "--json")
    several = farm("enqueue", *args, "--people", "2-4")
    assert several.code == 0, several.err
    assert json.loads(several.out)["new_clips"] == 13
    with create_engine(pg_url).connect() as conn:
        specs = [row[0] for row in conn.execute(text("SELECT spec FROM clips ORDER BY clip_index"))]
        conn.execute(text("DELETE FROM clip_events"))
        conn.execute(text("DELETE FROM clips"))
        conn.commit()
    assert {1 + len(s["others"]) for s in specs} <= {2, 3, 4} and len({len(s["others"]) for s in specs}) > 1
    for s in specs:
        for other in s["others"]:
            assert other["motion"]["pose_key"] == f"pose_{other['sequence']}"
    assert json.loads(farm("enqueue", *args).out)["new_clips"] == 13
    with create_engine(pg_url).connect() as conn:
        alone = [row[0] for row in conn.execute(text("SELECT spec FROM clips ORDER BY clip_index"))]
    assert all("others" not in s for s in alone)
    assert [{k: v for k, v in s.items() if k != "others"} for s in specs] == alone

    for bad in ("0", "5", "3-2", "two"):
        result = farm("enqueue", *args, "--people", bad)
        assert result.code == 2 and "--people" in result.err and "1 <= A <= B <= 4" in result.err, result.err
