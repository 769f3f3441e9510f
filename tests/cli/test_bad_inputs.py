"""Mistakes a user can make end in one sentence, a non-zero exit, no traceback, no secret and nothing written."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scheduler.enqueue import planned_clips

SECRET = "s3cret-Pa55"


def one_sentence(run) -> str:  # type: ignore[no-untyped-def]
    assert run.code != 0
    assert "Traceback" not in run.err and SECRET not in run.err and SECRET not in run.out
    lines = [line for line in run.err.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), run.err
    return " ".join(lines)


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("lease_seconds", "-1", "FARM_LEASE_SECONDS is not valid"),
        ("body_model", "foo", "FARM_BODY_MODEL is not valid (input should be 'free' or 'smpl')"),
        ("seed", "abc", "FARM_SEED is not valid"),
        ("convention", "mirror", "FARM_CONVENTION is not valid"),
        (
            "s3_endpoint_url",
            "notaurl",
            "FARM_S3_ENDPOINT_URL is not valid (it must be an http:// or https://",
        ),
        ("database_url", f"mysql://farm:{SECRET}@db.example/farm", "names the driver 'mysql'"),
        ("database_url", f"::farm:{SECRET}@nowhere", "is not a database URL"),
    ],
)
def test_bad_settings_are_one_sentence(farm, farm_env, tmp_path, setting, value, says):
    farm_env(**{setting: value})
    message = one_sentence(farm("status"))
    assert says in message
    assert not (tmp_path / "farm.db").exists()  # nothing written


def test_an_unreachable_broker_is_named_without_its_password(farm, farm_env):
    assert farm("catalog", "import", "builtin").code == 0
    farm_env(broker_url=f"redis://:{SECRET}@127.0.0.1:1/0")
    message = one_sentence(farm("enqueue", "--sequences", "walk_s01_01", "--limit", "1"))
    assert "cannot reach the broker at redis://:***@127.0.0.1:1/0" in message
    assert "new_clips" not in message and farm("status", "--json").out.count('"queued": 0') == 1


def amass_file(folder: Path, name: str, rate, poses: np.ndarray | None = None) -> None:  # type: ignore[no-untyped-def]
    poses = np.zeros((40, 72)) if poses is None else poses
    subject = folder / "01"
    subject.mkdir(parents=True, exist_ok=True)
    np.savez(
        subject / f"{name}_poses.npz", poses=poses, trans=np.zeros((len(poses), 3)), mocap_framerate=rate
    )


@pytest.mark.parametrize(
    ("rate", "poses", "says"),
    [
        (np.array([120.0, 60.0]), None, "mocap_framerate holds 2 values"),
        (1e-6, None, "mocap_framerate is 1e-06 Hz, expected 1 to 1000 Hz"),
        (np.nan, None, "mocap_framerate is nan Hz"),
        (120.0, np.full((40, 72), np.nan), "poses holds NaN or infinite values"),
    ],
)
def test_bad_amass_files_are_refused_at_import(farm, tmp_path, rate, poses, says):
    amass_file(tmp_path / "amass", "good", 120.0)
    amass_file(tmp_path / "amass", "bad", rate, poses)
    message = one_sentence(farm("catalog", "import", "amass", str(tmp_path / "amass"), "--name", "amass_cmu"))
    assert says in message and "bad_poses.npz" in message
    assert farm("catalog", "list", "--json").out.strip() == "[]"  # nothing imported, not even the good file


def test_limit_bounds_the_plan_that_is_built():
    # A recording of 10^12 MoCap frames has about 10^10 clips per run; a limit of 2 builds two.
    huge = SimpleNamespace(mocap_frames=10**12, mocap_rate=120.0, split="train")
    plan = planned_clips([("c", huge)], (0, 1, 2), 2)  # type: ignore[list-item]
    assert [(p.run, p.clip_index) for _, _, p in plan] == [(0, 0), (0, 1)]
