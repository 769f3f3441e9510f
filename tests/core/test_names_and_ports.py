"""Names that become paths and ports that become connections are refused in one sentence: a clip spec whose
name climbs out of its folder (as a hostile database row would hold it), and FARM_DATABASE_URL with a port that
is no port, run through the real `farm` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from farm.core.errors import FarmError
from farm.core.spec import CameraSpec, ClipSpec, MotionRef, parse_spec


def spec_dict(**changes: Any) -> dict[str, Any]:
    spec = ClipSpec(
        name="01_01_c0001", catalog="cmu", sequence="01_01", split="train", run=0, clip_index=0, stride=50,
        frame_start=0, frame_count=3,
        motion=MotionRef(uri="x.npz", pose_key="pose_01_01", trans_key="trans_01_01", rate=120, frames=999),
        seed=1, body_model="smpl", gender="female", shape=(0.0,) * 10, shape_source="bank#0",
        texture="textures/f1.jpg", background="bg/kitchen1.jpg", light=(0.5,) + (0.0,) * 8,
        camera=CameraSpec(distance=8.0), zrot=0.0,
    )  # fmt: skip
    return {**spec.model_dump(mode="json"), **changes}


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/01_01_c0001",
        "01_01_c0001/../../x",
        "/tmp/01_01_c0001",
        "01_01_c0001\n",
        "other_c0001",
        "01_01",
    ],
)
def test_a_clip_name_that_is_not_its_sequence_and_number_is_refused(name: str) -> None:
    with pytest.raises(FarmError) as refused:
        parse_spec(spec_dict(name=name))
    sentence = str(refused.value)
    assert sentence.startswith("a stored clip spec is not valid (") and "\n" not in sentence
    assert "name" in sentence and repr(name) in sentence
    assert parse_spec(spec_dict()).name == "01_01_c0001"  # the farm's own form passes


@pytest.mark.parametrize(
    ("field", "value"), [("catalog", "../cmu"), ("sequence", "a/../../b"), ("catalog", "")]
)
def test_other_fields_that_form_paths_are_refused_too(field: str, value: str) -> None:
    with pytest.raises(FarmError, match=f"not valid \\({field}: "):
        parse_spec(spec_dict(**{field: value}))


def farm_binary() -> str:
    found = Path(sys.executable).parent / "farm"
    return str(found) if found.exists() else "farm"


@pytest.mark.parametrize("port", ["99999", "abc", "0", "-1"])
def test_a_bad_database_port_is_one_sentence_and_exit_3(tmp_path: Path, port: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_DATABASE_URL"] = f"postgresql+psycopg://farm:s3cret@127.0.0.1:{port}/farm"
    run = subprocess.run(
        [farm_binary(), "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr and "s3cret" not in run.stderr, run.stderr
    assert (
        lines[0].startswith("error: FARM_DATABASE_URL ")
        and "port that is not a number from 1 to 65535" in lines[0]
    )
