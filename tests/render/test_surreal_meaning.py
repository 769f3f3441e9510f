"""The default output means what the original SURREAL's means.

Each relation of ../shared/surreal-reference/README.md ("What the original's values mean") is checked with
tests/surreal_relations.py, code written from that statement, first on the original's own sample clip (to show
that the test math is the original's) and then on a real `farm render-clip` of a built-in clip in the default
convention. The clean convention keeps its own tests (tests/blender/test_render_blender.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import surreal_relations as sr

W, H = 320, 240
FRAMES = 8
CLIP = "walk_s01_01_c0003"


def test_relations_hold_on_the_originals_sample(smpl_models):
    info = sr.load_sample()
    assert np.array_equal(np.round(sr.project(info)), sr.stored_joints2d(info))  # exact, whole pixels
    assert (sr.mirror_sign(info) == -1).all()  # the original's frames are mirror images
    j3 = sr.joints3d(info)
    head = j3[0, sr.HEAD] - j3[0, sr.PELVIS]
    assert head[1] / np.linalg.norm(head) < -0.95  # the body's up is -Y
    offset = sr.cam_loc(info) - j3[0, sr.PELVIS]
    assert offset[0] / np.linalg.norm(offset) > 0.99  # the camera looks along -X ...
    assert abs(np.linalg.norm(offset) - (float(info["camDist"][0, 0]) - 1)) < 0.05  # ... from camDist - 1
    # rotateBody: the free body is not SMPL, so compare limb directions (SMPL's own joints are licensed).
    _, joints = sr.smpl_from_info(smpl_models["male"], info, betas=np.zeros(10, np.float32))
    assert sr.limb_cosines(joints, j3).min() > 0.98
    wrong = dict(info, zrot=info["zrot"] + 1.0)  # a reader with the wrong yaw relation fails the same test
    assert (
        sr.limb_cosines(sr.smpl_from_info(smpl_models["male"], wrong, np.zeros(10, np.float32))[1], j3).min()
        < 0.9
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """A default `farm render-clip` of a built-in walking clip, read back from its files."""
    return render_default_clip(tmp_path_factory.mktemp("surreal"))


def render_default_clip(root: Path, **settings: str) -> dict[str, dict[str, np.ndarray]]:
    """`farm render-clip` of the built-in walking clip with the default settings but `settings` (FARM_*
    variables, e.g. FARM_ENGINE="eevee"), read back from its files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_DATABASE_URL"] = f"sqlite:///{root / 'farm.db'}"
    env.update(settings)
    farm = [str(Path(sys.executable).parent / "farm")]
    subprocess.run(
        [*farm, "catalog", "import", "builtin"], env=env, cwd=root, check=True, capture_output=True
    )
    run = subprocess.run(
        [*farm, "render-clip", "--sequence", "walk_s01_01", "--run", "0", "--clip", "2", "--frames", str(FRAMES),
         "--out", str(root / "out")],
        env=env, cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    folder = root / "out/builtin/train/run0/walk_s01_01"
    files = {"info": scipy.io.loadmat(folder / f"{CLIP}_info.mat")}
    for prefix in ("depth", "segm", "gtflow", "normal"):
        mat = scipy.io.loadmat(folder / f"{CLIP}_{prefix}.mat")
        files[prefix] = {"all": np.stack([mat[f"{prefix}_{t}"] for t in range(1, FRAMES + 1)])}
    files["manifest"] = json.loads((folder / f"{CLIP}_manifest.json").read_text())
    return files


@pytest.mark.blender
def test_default_render_is_in_the_surreal_convention(rendered):
    assert rendered["manifest"]["convention"] == "surreal"
    assert rendered["manifest"]["spec"]["convention"] == "surreal"


@pytest.mark.blender
def test_types_and_shapes_are_the_originals(rendered):
    info, sample = rendered["info"], sr.load_sample()
    for key, value in sample.items():
        if value.dtype.kind == "U":  # strings: sequence, bg0, cloth0
            continue
        ours = info[key]
        assert ours.dtype == value.dtype, key
        assert ours.shape == tuple(FRAMES if n == 100 else n for n in value.shape), key


@pytest.mark.blender
def test_the_originals_keys_plus_visibility_and_boxes(rendered):
    """A one-person clip: the original's keys, `visible` and `bbox` with their person axis, and no _inst.mat."""
    info = rendered["info"]
    # The sample's arrays keep the cells bg and cloth as their first strings (bg0, cloth0) and leave out source.
    originals = {k.removesuffix("0") for k in sr.load_sample()} | {"source"}
    assert {k for k in info if not k.startswith("__")} == originals | {"visible", "bbox"}
    assert info["visible"].shape == (1, 24, FRAMES) and info["bbox"].shape == (1, 4, FRAMES)
    assert "_inst.mat" not in {f["name"][len(CLIP) :] for f in rendered["manifest"]["files"]}


@pytest.mark.blender
def test_projection_mirror_and_world_frame(rendered):
    info = rendered["info"]
    assert np.array_equal(np.round(sr.project(info)), sr.stored_joints2d(info))
    assert (sr.mirror_sign(info) == -1).all()
    j3 = sr.joints3d(info)
    head = j3[0, sr.HEAD] - j3[0, sr.PELVIS]
    assert head[1] / np.linalg.norm(head) < -0.95
    offset = sr.cam_loc(info) - j3[0, sr.PELVIS]
    assert offset[0] / np.linalg.norm(offset) > 0.99
    assert abs(np.linalg.norm(offset) - (float(info["camDist"][0, 0]) - 1)) < 0.05
    # The frames are mirrored like the joints: left joints land on left parts of the segmentation, where the
    # surface at the joint's pixel is the joint's own (depth along the ray within 0.2 m of the joint's: a joint
    # farther behind it is hidden by another part, which may be of either side).
    segm, depth = rendered["segm"]["all"], rendered["depth"]["all"]
    hits = {"left": [0, 0], "right": [0, 0]}  # [same side, other side]
    j2 = np.floor(sr.project(info)).astype(int)
    distance = np.linalg.norm(j3 - sr.cam_loc(info), axis=-1)
    for t in range(FRAMES):
        for side, joints, own, other in (
            ("left", sr.LEFT_JOINTS, sr.LEFT_LABELS, sr.RIGHT_LABELS),
            ("right", sr.RIGHT_JOINTS, sr.RIGHT_LABELS, sr.LEFT_LABELS),
        ):
            for j in joints:
                x, y = j2[t, j]
                if 0 <= x < W and 0 <= y < H and depth[t, y, x] > distance[t, j] - 0.2:
                    hits[side][0] += int(segm[t, y, x] in own)
                    hits[side][1] += int(segm[t, y, x] in other)
    for side, (same, other) in hits.items():
        assert same > 3 * other and same >= FRAMES, (side, hits)


@pytest.mark.blender
def test_pose_and_zrot_give_joints3d_through_rotate_body(rendered, smpl_models):
    info = rendered["info"]
    gender = "male" if int(info["gender"][0, 0]) == 1 else "female"
    vertices, joints = sr.smpl_from_info(smpl_models[gender], info)
    assert np.abs(joints - sr.joints3d(info)).max() < 1e-3  # metres
    assert sr.limb_cosines(joints, sr.joints3d(info)).min() > 0.999
    # Depth is the distance along each pixel's ray to that same SMPL body (exact ray-mesh hits, a sample of
    # body pixels away from the silhouette); a reader's planar z would be off by depth * (|ray| - 1).
    depth, segm = rendered["depth"]["all"], rendered["segm"]["all"]
    rays = sr.pixel_rays(W, H)
    unit = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    faces = np.asarray(smpl_models[gender].faces, np.int64)
    rng = np.random.default_rng(0)
    for t in (0, FRAMES - 1):
        fg = segm[t] > 0
        assert (depth[t][~fg] == 1e10).all()
        inner = fg & np.roll(fg, 1, 0) & np.roll(fg, -1, 0) & np.roll(fg, 1, 1) & np.roll(fg, -1, 1)
        ys, xs = np.nonzero(inner)
        pick = rng.choice(len(ys), 60, replace=False)
        hits = sr.ray_distances(sr.cam_loc(info), unit[ys[pick], xs[pick]], vertices[t], faces)
        assert np.median(np.abs(depth[t][ys[pick], xs[pick]] - hits)) < 2e-3  # metres


@pytest.mark.blender
def test_flow_is_the_raw_speed_pass_towards_the_previous_frame(rendered):
    info, flow, segm = rendered["info"], rendered["gtflow"]["all"], rendered["segm"]["all"]
    assert not flow[0].any()  # frame 1 has no predecessor
    proj = sr.project(info)
    errors, motions = [], []
    for t in range(1, FRAMES):
        motion = proj[t] - proj[t - 1]  # each joint's motion from frame t-1 to t
        for j in (0, 3, 6, 9, 1, 2):  # pelvis, spine and hips: the surface in front moves with the joint
            x, y = np.floor(proj[t, j]).astype(int)
            if segm[t, y, x] == 0:
                continue
            seen = np.array([-flow[t, y, x, 0], flow[t, y, x, 1]])  # what users do: negate channel 0
            errors.append(np.linalg.norm(seen - motion[j]))
            motions.append(np.linalg.norm(motion[j]))
    assert len(errors) >= 3 * (FRAMES - 1)
    assert np.median(motions) > 1.0  # the walk moves joints by pixels per frame, so the test means something
    assert np.median(errors) < 0.25 * np.median(motions)


@pytest.mark.blender
def test_normals_are_world_frame_and_face_the_camera(rendered):
    normal, segm = rendered["normal"]["all"], rendered["segm"]["all"]
    rays = sr.pixel_rays(W, H)
    for t in range(FRAMES):
        fg = segm[t] > 0
        n = normal[t][fg].astype(np.float64)
        assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-3)
        facing = np.einsum("ij,ij->i", n, rays[fg]) / np.linalg.norm(rays[fg], axis=1)
        assert (facing < 0).mean() > 0.95 and facing.mean() < -0.5
        assert not normal[t][~fg].any()
