"""Issue 26's plan options at the command line: `farm enqueue` and `farm render-clip` take --camera-motion (one
mode, or a mix drawn per clip), --shutter and --correspondence/--no-correspondence, and render-clip --people too.

They reach the stored spec; a plan without them (or with their defaults spelled out) stores exactly the specs
it stored before issue 26; a mix draws each mode in about its share, the same again on every run; a bad value
is bad usage (exit 2) in one sentence with nothing written. Everything runs through `farm`'s entry point (the
`farm` fixture) on the embedded SQLite default and the built-in catalog."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from farm.cli.plan_options import parse_camera_motion
from farm.core.spec import ClipSpec
from scheduler.plan import plan_sequence
from scheduler.sampler import (
    GENDERS,
    AppearancePools,
    SequenceRef,
    builtin_backgrounds,
    builtin_shape_bank,
    builtin_textures,
    sample_clip_spec,
)

MIX = "static=0.5,follow=0.3,follow+handheld+zoom=0.2"
# sha256 of the first 300 clips' specs that `farm enqueue --sequences builtin_all --limit 300` stored before issue
# 26 (commit c3b8e99, FARM_SEED 0; made with spec_digest below): a default plan must store them unchanged.
BEFORE_ISSUE_26 = "d5be89e5cdc39bf77e33bdbd80a589c84b33810ec665939df45e54a733410352"


def stored_specs(folder: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(folder / "farm.db") as conn:
        return [json.loads(spec) for (spec,) in conn.execute("SELECT spec FROM clips ORDER BY name, run")]


def spec_digest(specs: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for spec in specs:
        digest.update(json.dumps(spec).encode() + b"\n")
    return digest.hexdigest()


def resolve(sequence: str, run: int, clip: int, **options: Any) -> tuple[ClipSpec, str]:
    from farm.cli.render_clip import resolve_spec
    from farm.core.settings import get_settings

    return resolve_spec(get_settings(), sequence, run, clip, **options)


# --- the options reach the stored spec -------------------------------------------------------------------


def test_enqueue_stores_the_camera_motion_the_shutter_and_the_correspondence_flag(farm, tmp_path):
    assert farm("catalog", "import", "builtin").code == 0
    run = farm(
        "enqueue", "--sequences", "builtin_all", "--limit", "12", "--camera-motion", "follow+handheld+zoom",
        "--shutter", "0.5", "--correspondence",
    )  # fmt: skip
    assert run.code == 0 and "12 new clips queued" in run.out, run.err
    stored = stored_specs(tmp_path)
    specs = [ClipSpec.model_validate(s) for s in stored]
    assert len(specs) == 12 and all(s["shutter"] == 0.5 and s["correspondence"] is True for s in stored)
    for spec in specs:
        motion = spec.camera_motion
        assert motion is not None and motion.mode == "follow+handheld+zoom", motion
        assert (
            0.2 <= motion.lag_s <= 0.8 and 0.15 <= motion.shake_deg <= 0.6 and 0.6 <= motion.shake_hz <= 1.6
        )
        assert 0.8 <= motion.zoom <= 1.6
    assert len({s.camera_motion.shake_seed for s in specs if s.camera_motion}) == 12  # drawn per clip
    # render-clip with the same options reads each back unchanged (its options drawn from the stored seed as
    # enqueue drew them), and plans the same spec where the clip is not stored.
    options = {"camera_motions": {"follow+handheld+zoom": 1.0}, "shutter": 0.5, "correspondence": True}
    for spec in specs[:3]:
        assert resolve(f"builtin/{spec.sequence}", spec.run, spec.clip_index, **options) == (spec, "database")
    with sqlite3.connect(tmp_path / "farm.db") as conn:
        conn.execute("DELETE FROM clips")
    for spec in specs[:3]:
        assert resolve(f"builtin/{spec.sequence}", spec.run, spec.clip_index, **options) == (spec, "planned")


def test_no_correspondence_and_a_zero_shutter_are_the_defaults(farm, tmp_path):
    assert farm("catalog", "import", "builtin").code == 0
    run = farm(
        "enqueue",
        "--sequences",
        "builtin_all",
        "--limit",
        "3",
        "--camera-motion",
        "zoom",
        "--no-correspondence",
    )
    assert run.code == 0, run.err
    stored = stored_specs(tmp_path)
    assert all(
        s["camera_motion"]["mode"] == "zoom" and "shutter" not in s and "correspondence" not in s
        for s in stored
    )


# --- a default plan is the plan of before ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--camera-motion", "static"),
        ("--camera-motion", "static=1,follow=0", "--shutter", "0", "--no-correspondence"),
    ],
    ids=["no options", "static", "defaults spelled out"],
)
def test_a_default_enqueue_stores_exactly_the_specs_it_stored_before(farm, tmp_path, options):
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "300", *options).code == 0
    stored = stored_specs(tmp_path)
    assert not [s for s in stored if {"camera_motion", "shutter", "correspondence", "others"} & set(s)]
    assert spec_digest(stored) == BEFORE_ISSUE_26


def pools() -> AppearancePools:
    return AppearancePools(
        {g: builtin_shape_bank(g) for g in GENDERS},
        {(g, s): builtin_textures(g, s) for g in GENDERS for s in ("train", "test")},
        {s: builtin_backgrounds(s) for s in ("train", "test")},
    )


def sequences(count: int) -> list[SequenceRef]:
    from farm.core.spec import MotionRef

    refs = []
    for i in range(count):
        motion = MotionRef(
            uri="/data/smpl_data.npz", pose_key=f"p{i}", trans_key=f"t{i}", rate=120, frames=2751
        )
        refs.append(SequenceRef("cmu", f"{i:02d}_01", "train", motion))
    return refs


def specs(count: int, **options: Any) -> list[ClipSpec]:
    plan = plan_sequence(2751, 120)
    found = [
        sample_clip_spec(ref, p, pools(), 0, "free", **options)
        for ref in sequences(count // len(plan) + 1)
        for p in plan
    ]
    return found[:count]


def test_the_sampler_draws_a_static_plan_as_before_and_a_moving_camera_apart_from_the_rest():
    default = specs(60)
    for options in (
        {"camera_motions": None},
        {"camera_motions": {"static": 1.0}},
        {"shutter": 0.0, "correspondence": False},
    ):
        assert [s.model_dump_json() for s in specs(60, **options)] == [s.model_dump_json() for s in default]
    # A moving camera draws from its own stream: every other parameter is the static clip's.
    moving = specs(60, camera_motions=parse_camera_motion(MIX))
    assert [s.model_copy(update={"camera_motion": None}) for s in moving] == default


def test_a_mix_draws_each_mode_in_its_share_and_the_same_modes_every_time():
    mix = parse_camera_motion(MIX)
    assert mix == {"static": 0.5, "follow": 0.3, "follow+handheld+zoom": 0.2}
    drawn = [s.camera_motion_mode for s in specs(3000, camera_motions=mix)]
    shares = {mode: n / len(drawn) for mode, n in Counter(drawn).items()}
    assert set(shares) == set(mix) and all(abs(shares[m] - w) < 0.03 for m, w in mix.items()), shares
    assert [s.camera_motion_mode for s in specs(300, camera_motions=mix)] == drawn[:300]  # reproducible
    # The weights are relative and their order does not matter.
    assert [
        s.camera_motion
        for s in specs(100, camera_motions=parse_camera_motion("follow+handheld+zoom=2,follow=3,static=5"))
    ] == [s.camera_motion for s in specs(100, camera_motions=mix)]


def test_enqueue_draws_a_mix_per_clip_as_render_clip_does(farm, tmp_path):
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "60", "--camera-motion", MIX).code == 0
    stored = [ClipSpec.model_validate(s) for s in stored_specs(tmp_path)]
    assert {s.camera_motion_mode for s in stored} == {"static", "follow", "follow+handheld+zoom"}
    for spec in stored[:6]:
        again, _ = resolve(
            f"builtin/{spec.sequence}", spec.run, spec.clip_index, camera_motions=parse_camera_motion(MIX)
        )
        assert again == spec


# --- render-clip: --people, and options over a stored spec -------------------------------------------------


def test_render_clip_plans_several_people_as_enqueue_stores_them(farm, farm_env, tmp_path):
    assert farm("catalog", "import", "builtin").code == 0
    planned, source = resolve("walk_s01_01", 0, 0, people=(2, 2))
    assert source == "planned" and len(planned.people) == 2
    assert (
        planned.model_copy(update={"others": ()}) == resolve("walk_s01_01", 0, 0)[0]
    )  # the first is the same
    assert (
        farm("enqueue", "--sequences", "walk_s01_01", "--runs", "0", "--limit", "1", "--people", "2").code
        == 0
    )
    (stored,) = [ClipSpec.model_validate(s) for s in stored_specs(tmp_path)]
    assert stored == planned

    # Over a stored one-person spec, --people 2 draws the second person from the stored seed as enqueue would.
    other = tmp_path / "other"
    other.mkdir()
    farm_env(database_url=f"sqlite:///{other / 'farm.db'}")
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "walk_s01_01", "--runs", "0", "--limit", "1").code == 0
    assert resolve("walk_s01_01", 0, 0)[0].people == planned.people[:1]
    assert resolve("walk_s01_01", 0, 0, people=(2, 2)) == (planned, "database")


def test_render_clip_options_replace_a_stored_specs_own(farm, tmp_path):
    assert farm("catalog", "import", "builtin").code == 0
    args = ("enqueue", "--sequences", "walk_s01_01", "--runs", "0", "--limit", "1")
    assert (
        farm(*args, "--camera-motion", "follow", "--shutter", "0.4", "--correspondence", "--people", "3").code
        == 0
    )
    (stored,) = [ClipSpec.model_validate(s) for s in stored_specs(tmp_path)]
    assert stored.camera_motion_mode == "follow" and len(stored.people) == 3
    assert resolve("walk_s01_01", 0, 0) == (stored, "database")  # no option: the stored spec as it is
    replaced, source = resolve(
        "walk_s01_01", 0, 0, people=(1, 1), camera_motions={"static": 1.0}, shutter=0.0, correspondence=False
    )
    issue_26 = ("camera_motion", "shutter", "correspondence", "others")
    assert source == "database" and replaced == ClipSpec.model_validate(
        {k: v for k, v in stored.model_dump().items() if k not in issue_26}
    )
    assert stored_specs(tmp_path) == [stored.model_dump(mode="json")]  # the database keeps its own


# --- bad values -------------------------------------------------------------------------------------------


BAD = [
    (
        "--camera-motion",
        "zoom+follow",
        "'zoom+follow' is not a camera motion; use static, some of follow, handheld, zoom joined by '+' in that order",
    ),
    ("--camera-motion", "pan", "'pan' is not a camera motion"),
    ("--camera-motion", "static=0.5,follow", "'follow' has no weight"),
    ("--camera-motion", "static=1,pan=1", "'pan' is not a mode"),
    ("--camera-motion", "follow=-1", "'follow=-1' has no weight of at least 0"),
    ("--camera-motion", "follow=nan", "'follow=nan' has no weight of at least 0"),
    ("--camera-motion", "static=0,follow=0", "its weights add up to 0"),
    ("--camera-motion", "follow=1,follow=2", "'follow' is named twice"),
    ("--shutter", "1.5", "'1.5' is not a number from 0.0 to 1.0"),
    ("--shutter", "nan", "'nan' is not a number from 0.0 to 1.0"),
    ("--people", "5", "'5' is not a number of people"),
    ("--people", "3-2", "'3-2' is not a number of people"),
]


@pytest.mark.parametrize("command", ["enqueue", "render-clip"])
@pytest.mark.parametrize(("option", "value", "says"), BAD, ids=[f"{o} {v}" for o, v, _ in BAD])
def test_a_bad_value_is_bad_usage_in_one_sentence_with_nothing_written(
    farm, tmp_path, command, option, value, says
):
    args = {
        "enqueue": ("--sequences", "builtin_all"),
        "render-clip": ("--sequence", "walk_s01_01", "--out", str(tmp_path / "out")),
    }[command]
    run = farm(command, *args, option, value)
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert run.code == 2 and len(lines) == 1 and lines[0].startswith("error: Invalid value for "), run.err
    assert f"'{option}'" in lines[0] and says in lines[0], lines[0]
    assert f"see `farm {command} --help`" in lines[0] and "Traceback" not in run.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, no output folder


# --- one real render ---------------------------------------------------------------------------------------


@pytest.mark.blender
def test_render_clip_renders_a_moving_camera_and_stores_each_frames_camera(farm, tmp_path):
    import numpy as np
    import scipy.io

    assert farm("catalog", "import", "builtin").code == 0
    out = tmp_path / "out"
    run = farm(
        "render-clip", "--sequence", "walk_s01_01", "--frames", "2", "--camera-motion", "follow+handheld+zoom",
        "--people", "2", "--out", str(out),
    )  # fmt: skip
    assert run.code == 0, run.err
    folder = out / "builtin/train/run0/walk_s01_01"
    manifest = json.loads((folder / "walk_s01_01_c0001_manifest.json").read_text())
    assert (
        manifest["spec"]["camera_motion"]["mode"] == "follow+handheld+zoom"
        and len(manifest["spec"]["others"]) == 1
    )
    info = scipy.io.loadmat(folder / "walk_s01_01_c0001_info.mat")
    K, R, T = info["camK"], info["camR"], info["camT"]
    assert K.shape == R.shape == (3, 3, 2) and T.shape == (3, 2)
    for t in range(2):  # joints2D = K_t (R_t X + T_t) / z, whole pixels in the surreal convention
        x = np.einsum(
            "ij,pjk->pik",
            K[:, :, t],
            np.einsum("ij,pjk->pik", R[:, :, t], info["joints3D"][..., t]) + T[:, t, None],
        )
        assert np.abs(x[:, :2] / x[:, 2:] - info["joints2D"][..., t]).max() <= 0.5 + 1e-3
    assert np.allclose(T[:, 0], -R[:, :, 0] @ info["camLoc"][:, 0], atol=1e-4)  # frame 0: SURREAL's camera
