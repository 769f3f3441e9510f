"""`farm jobs` and `farm bundle` without Blender: a prepared job comes back as it was saved, and bad input is
refused in one sentence with nothing written. (tests/docker/test_bundle.py renders jobs from a bundle.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from farm.cli.bundle import parse_size
from farm.cli.jobs import load_job, save_job
from farm.core.errors import BadUsage


def test_a_prepared_job_comes_back_as_it_was_saved(farm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert farm("catalog", "import", "builtin").code == 0
    run = farm("jobs", "prepare", "jobs", "--sequence", "walk_s01_01", "--clips", "2", "--frames", "2")
    assert run.code == 0 and "wrote 2 render jobs" in run.out, run.err
    from farm.cli.render_clip import resolve_spec
    from farm.core.settings import get_settings
    from farm.render.prepare import prepare_clip

    spec, _ = resolve_spec(get_settings(), "walk_s01_01", 0, 1)
    fresh = prepare_clip(spec, frames=2)
    loaded = load_job(tmp_path / "jobs" / f"{spec.name}.json")
    assert loaded.job.spec == fresh.job.spec and loaded.job.spec.frame_count == 2
    for name in ("vertices", "faces", "vt", "ft", "face_parts", "texture", "background"):
        assert np.array_equal(getattr(loaded.job, name), getattr(fresh.job, name)), name
    for name in ("K", "R", "t", "world_from_body", "width", "height", "pixel_centre"):
        assert np.array_equal(getattr(loaded.job.camera, name), getattr(fresh.job.camera, name)), name
    assert np.array_equal(loaded.poses, fresh.poses) and np.array_equal(loaded.joints, fresh.joints)
    save_job(tmp_path, loaded)  # and again: the same bytes
    assert (tmp_path / f"{spec.name}.npz").read_bytes() == (
        tmp_path / "jobs" / f"{spec.name}.npz"
    ).read_bytes()


def test_bad_jobs_and_folders_are_refused_in_one_sentence(farm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "x.json").write_text(json.dumps({"format": 1, "spec": {}}))
    for args in (("jobs", "render", "jobs", "--out", "out"), ("jobs", "render", "nowhere", "--out", "out")):
        run = farm(*args)
        assert run.code == 3 and len(run.err.strip().splitlines()) == 1, run.err
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    for args in (
        ("bundle", "taken", "--no-torch"),
        ("jobs", "prepare", "taken", "--sequence", "walk_s01_01"),
    ):
        run = farm(*args)
        assert run.code == 3 and "already exists" in run.err, run.err
    assert list((tmp_path / "taken").iterdir()) == []
    run = farm("bundle", "new", "--split", "0")
    assert run.code == 2 and "--split" in run.err and not (tmp_path / "new").exists()


def test_sizes() -> None:
    assert parse_size("60M") == 60 * 2**20 and parse_size("1g") == 2**30 and parse_size("512") == 512
    with pytest.raises(BadUsage):
        parse_size("60MB")
