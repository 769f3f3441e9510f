"""`farm render-clip` end to end on the embedded SQLite database and the built-in catalog (real Blender)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

pytestmark = pytest.mark.blender


def test_render_clip_plans_renders_and_draws_a_contact_sheet(farm, farm_env, tmp_path):
    farm_env(database_url=f"sqlite:///{tmp_path / 'farm.db'}")
    assert farm("catalog", "import", "builtin").code == 0
    out, sheet = tmp_path / "out", tmp_path / "sheet.png"
    run = farm(
        "render-clip", "--sequence", "walk_s01_01", "--run", "1", "--clip", "2", "--frames", "3",
        "--out", str(out), "--contact-sheet", str(sheet),
    )  # fmt: skip
    assert run.code == 0, run.err
    clip = out / "builtin/train/run1/walk_s01_01"
    manifest = json.loads((clip / "walk_s01_01_c0003_manifest.json").read_text())
    assert manifest["frames"] == 3 and manifest["spec"]["frame_count"] == 3
    assert len(manifest["files"]) == 7  # mp4, five .mat files, the thumbnail
    assert Image.open(sheet).size[0] > 1000


def test_render_clip_names_the_fix_for_a_bad_clip(farm, farm_env, tmp_path):
    farm_env(database_url=f"sqlite:///{tmp_path / 'farm.db'}")
    assert farm("catalog", "import", "builtin").code == 0
    run = farm("render-clip", "--sequence", "walk_s01_01", "--clip", "999", "--out", str(tmp_path))
    assert run.code != 0 and "choose --clip 0.." in run.err
    run = farm("render-clip", "--sequence", "no_such_walk", "--out", str(tmp_path))
    assert run.code != 0 and "unknown sequence" in run.err


def test_render_clip_writes_the_clean_convention_on_request(farm, farm_env, tmp_path):
    farm_env(database_url=f"sqlite:///{tmp_path / 'farm.db'}")
    assert farm("catalog", "import", "builtin").code == 0
    out = tmp_path / "out"
    run = farm(
        "render-clip",
        "--sequence",
        "walk_s01_01",
        "--frames",
        "2",
        "--convention",
        "clean",
        "--out",
        str(out),
    )
    assert run.code == 0, run.err
    manifest = json.loads(
        (out / "builtin/train/run0/walk_s01_01/walk_s01_01_c0001_manifest.json").read_text()
    )
    assert manifest["convention"] == manifest["spec"]["convention"] == "clean"
