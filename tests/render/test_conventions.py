"""Choosing the output convention: the spec field, FARM_CONVENTION and the --convention options."""

import json
import sqlite3

import pytest
from pydantic import ValidationError

from farm.core.spec import SPEC_VERSION, ClipSpec

V1 = {
    "spec_version": 1, "name": "a_c0001", "catalog": "builtin", "sequence": "a", "split": "train", "run": 0,
    "clip_index": 0, "stride": 50, "frame_start": 0, "frame_count": 10,
    "motion": {"uri": "builtin:a", "pose_key": "p", "trans_key": "t", "rate": 120, "frames": 40},
    "seed": 0, "body_model": "free", "gender": "female", "shape": [0.0] * 10, "shape_source": "x",
    "texture": "t", "background": "b", "light": [0.5] + [0.0] * 8, "camera": {"distance": 8.0}, "zrot": 0.0,
}  # fmt: skip


def test_specs_before_version_2_read_as_clean_and_new_ones_default_to_surreal():
    old = ClipSpec.model_validate(V1)
    assert old.convention == "clean" and old.spec_version == 1
    assert ClipSpec.model_validate(old.model_dump(mode="json")) == old  # stays clean when stored again
    new = ClipSpec.model_validate({**V1, "spec_version": SPEC_VERSION})
    assert SPEC_VERSION == 2 and new.convention == "surreal"
    with pytest.raises(ValidationError):
        ClipSpec.model_validate({**V1, "convention": "mirrored"})


def stored_conventions() -> list[str]:
    with sqlite3.connect("farm.db") as conn:
        return [
            json.loads(row[0])["convention"] for row in conn.execute("SELECT spec FROM clips ORDER BY id")
        ]


def test_enqueue_stores_the_chosen_convention(farm, farm_env):
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "walk_s01_01", "--runs", "0", "--limit", "1").code == 0
    assert (
        farm(
            "enqueue", "--sequences", "run_s01_01", "--runs", "0", "--limit", "1", "--convention", "clean"
        ).code
        == 0
    )
    farm_env(convention="clean")
    assert farm("enqueue", "--sequences", "jump_s01_01", "--runs", "0", "--limit", "1").code == 0
    assert stored_conventions() == ["surreal", "clean", "clean"]


def test_an_unknown_convention_is_one_sentence_and_writes_nothing(farm):
    assert farm("catalog", "import", "builtin").code == 0
    run = farm("enqueue", "--sequences", "walk_s01_01", "--limit", "1", "--convention", "mirror")
    assert (
        run.code == 2 and "Invalid value for '--convention'" in run.err and "'mirror'" in run.err
    )  # bad usage
    assert "Traceback" not in run.err
    assert stored_conventions() == []
