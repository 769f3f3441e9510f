"""Real Blender renders (bpy 5.0.1 in a warm `python -m blender.server` child), read back from the files.

1. A rigid stand-in body whose motion is known in closed form: flow, depth and pixel centres checked exactly.
2. The free body on a built-in walk, written in the SURREAL format and checked against the reference.
3. The warm process: determinism across clips, reset between clips, crash and memory recycling.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from standin_job import check_standin, standin_job

from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.client import BlenderProcessRenderer
from farm.render.job import BACKGROUND_DEPTH, RenderError, RenderOptions
from farm.render.prepare import prepare_clip
from worker.output import write_clip
from worker.video import read_mp4

pytestmark = pytest.mark.blender

W, H = 320, 240


def walk_spec(**changes: object) -> ClipSpec:
    """Clip 3 of run 0 of a built-in walk: the body is walking, not standing."""
    spec = ClipSpec(
        name="walk_s01_01_c0003", catalog="cmu", sequence="walk_s01_01", split="train", run=0, clip_index=2,
        stride=50, frame_start=100, frame_count=100,
        motion=MotionRef(uri="builtin:walk_s01_01", pose_key="poses", trans_key="trans", rate=120, frames=1432),
        seed=7, body_model="free", gender="female", shape=(0.5, -0.3) + (0.0,) * 8, shape_source="test",
        texture="builtin:texture/female/train/0003", background="builtin:background/train/0001",
        light=(0.9, -0.5, 0.1, 0.2, 0.0, 0.0, 0.1, 0.0, 0.1), camera=CameraSpec(distance=6.5), zrot=0.8,
        convention="clean",  # these tests pin the clean convention; tests/render/test_surreal_meaning.py the default
    )  # fmt: skip
    return spec.model_copy(update=changes)


@pytest.fixture(scope="module")
def renderer():
    r = BlenderProcessRenderer(RenderOptions(timeout_s=300))
    yield r
    r.close()


# ---- 1. exact geometry on the rigid stand-in -----------------------------------------------------------------


@pytest.mark.parametrize("convention", ["clean", "surreal"])
def test_standin_flow_depth_and_pixel_centres_are_exact(renderer, convention):
    """Every foreground pixel unprojects onto its part's cube, in either convention's own terms: clean (planar
    depth, forward flow, camera-frame normals) and surreal (mirrored frames with pixel centres at c + 0.5,
    depth along the ray, Blender's raw speed pass towards the previous frame, world-frame normals)."""
    job = standin_job(4, convention)
    check_standin(renderer.render(job), job, flow_atol=0.01)


# ---- 2. the free body on a built-in walk, in the SURREAL format -----------------------------------------------

INFO = {  # key: (shape with T for the frame count, dtype kind)
    "clipNo": ((1, 1), "i"), "stride": ((1, 1), "i"), "gender": (("T", 1), "u"), "light": ((9, "T"), "f"),
    "camDist": ((1, 1), "f"), "camLoc": ((3, 1), "f"), "zrot": (("T", 1), "f"), "pose": ((72, "T"), "f"),
    "shape": ((10, "T"), "f"), "joints2D": ((2, 24, "T"), "f"), "joints3D": ((3, 24, "T"), "f"),
    "bg": ((1, "T"), "O"), "cloth": ((1, "T"), "O"),
}  # fmt: skip
FRAMES = 5


@pytest.fixture(scope="module")
def walk(renderer, tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    clip = prepare_clip(walk_spec(), frames=FRAMES)
    result = renderer.render(clip.job)
    files = write_clip(root, clip.job.spec, result, clip.poses, clip.joints, clip.job.camera, result.software)
    return clip, result, files


def _frames(path: Path, prefix: str) -> np.ndarray:
    mat = scipy.io.loadmat(path)
    keys = sorted((k for k in mat if k.startswith(prefix + "_")), key=lambda k: int(k.split("_")[1]))
    assert keys == [f"{prefix}_{i}" for i in range(1, FRAMES + 1)]
    return np.stack([mat[k] for k in keys])


def test_walk_files_have_the_reference_format(walk):
    clip, result, files = walk
    d = files.directory
    name = "walk_s01_01_c0003"
    assert d.relative_to(d.parents[3]).as_posix() == "cmu/train/run0/walk_s01_01"
    assert sorted(p.name for p in d.iterdir()) == sorted(
        f"{name}{s}" for s in (".mp4", "_info.mat", "_depth.mat", "_segm.mat", "_gtflow.mat", "_normal.mat",
                               "_thumb.jpg", "_manifest.json")
    )  # fmt: skip
    info = scipy.io.loadmat(d / f"{name}_info.mat")
    assert str(info["sequence"][0]) == name and str(info["source"][0]) == "cmu"
    for key, (shape, kind) in INFO.items():
        assert info[key].shape == tuple(FRAMES if s == "T" else s for s in shape), key
        assert info[key].dtype.kind == kind, key
    for key, dtype in (("gender", np.uint8), ("light", np.float32), ("joints2D", np.float32)):
        assert info[key].dtype == dtype
    assert int(info["clipNo"][0, 0]) == 3 and int(info["stride"][0, 0]) == 50
    assert str(info["bg"][0, 0][0]) == "builtin:background/train/0001"
    for prefix, shape, dtype in (
        ("depth", (H, W), np.float32), ("segm", (H, W), np.uint8), ("gtflow", (H, W, 2), np.float32),
        ("normal", (H, W, 3), np.float32),
    ):  # fmt: skip
        arr = _frames(d / f"{name}_{prefix}.mat", prefix)
        assert arr.shape[1:] == shape and arr.dtype == dtype, prefix
    video = read_mp4(d / f"{name}.mp4", W, H)
    assert video.shape == (FRAMES, H, W, 3)
    assert np.abs(video.astype(float) - result.rgb).mean() < 4  # codec noise only


def test_walk_joints_project_with_camloc_and_k(walk):
    _, _, files = walk
    info = scipy.io.loadmat(files.directory / "walk_s01_01_c0003_info.mat")
    K = np.array([[600.0, 0, 160], [0, 600, 120], [0, 0, 1]])
    R = np.diag([1.0, -1.0, -1.0])  # the documented camera rotation
    t = -R @ info["camLoc"][:, 0].astype(np.float64)
    X = info["joints3D"].astype(np.float64).transpose(2, 1, 0)  # (T, 24, 3)
    x = (X @ R.T + t) @ K.T
    proj = x[..., :2] / x[..., 2:]
    assert np.abs(proj - info["joints2D"].transpose(2, 1, 0)).max() < 0.5
    assert np.abs(proj[0, 0] - [160, 120]).max() < 1e-3  # the camera looks at the frame-0 pelvis
    assert abs(np.linalg.norm(info["camLoc"][:, 0] - X[0, 0]) - float(info["camDist"][0, 0])) < 1e-4


def test_walk_passes_agree_and_show_the_body(walk):
    clip, result, files = walk
    d, name = files.directory, "walk_s01_01_c0003"
    segm = _frames(d / f"{name}_segm.mat", "segm")
    depth = _frames(d / f"{name}_depth.mat", "depth")
    flow = _frames(d / f"{name}_gtflow.mat", "gtflow")
    normal = _frames(d / f"{name}_normal.mat", "normal")
    fg = segm > 0
    assert fg.sum(axis=(1, 2)).min() >= 500
    assert len(np.unique(segm[fg])) >= 12 and segm.max() <= 24
    assert np.isfinite(depth[fg]).all() and depth[fg].max() < 100
    assert (depth[~fg] == BACKGROUND_DEPTH).all()
    assert np.array_equal(fg, result.alpha > 0.5)  # RGB foreground (alpha before compositing)
    assert np.array_equal(fg, depth < BACKGROUND_DEPTH)
    assert not flow[~fg].any() and not normal[~fg].any()
    moving = np.linalg.norm(flow[:-1], axis=-1)[fg[:-1]]
    assert (moving > 0.01).mean() > 0.9  # the walking body moves everywhere
    # the background where the body is not equals the background image (up to the sRGB rounding)
    bg = clip.job.background
    assert np.abs(result.rgb[~fg].astype(int) - np.broadcast_to(bg, result.rgb.shape)[~fg]).max() <= 1


def test_same_spec_renders_identically_after_other_clips(renderer, walk):
    clip, first, _ = walk
    other = prepare_clip(
        walk_spec(texture="builtin:texture/female/train/0009", light=(0.6,) + (0.2,) * 8, zrot=2.0), frames=3
    )
    second = renderer.render(other.job)
    assert not np.array_equal(second.rgb[0], first.rgb[0])
    again = renderer.render(clip.job)
    assert np.array_equal(again.segm, first.segm)
    assert np.array_equal(again.depth, first.depth)
    assert np.array_equal(again.flow, first.flow)
    assert np.abs(again.rgb.astype(int) - first.rgb).max() <= 1


# ---- 3. the warm process ---------------------------------------------------------------------------------


def test_bad_job_fails_the_clip_and_the_process_stays_warm(renderer):
    job = standin_job(2)
    job.face_parts = np.full_like(job.face_parts, 30)
    pid = (renderer.start(), renderer.pid)[1]
    with pytest.raises(RenderError, match="part labels"):
        renderer.render(job)
    assert renderer.pid == pid
    assert renderer.render(standin_job(2)).segm.max() == 24


def test_crash_surfaces_as_render_error_then_restarts(renderer):
    def kill(done: int, total: int) -> None:
        os.kill(renderer.pid, signal.SIGKILL)

    with pytest.raises(RenderError, match="died"):
        renderer.render(standin_job(3), progress=kill)
    assert renderer.render(standin_job(2)).segm.max() == 24


def test_memory_ceiling_recycles_the_process():
    with BlenderProcessRenderer(RenderOptions(memory_limit_mb=1)) as r:
        r.render(standin_job(2))
        assert r.pid is None  # recycled after the clip
        r.render(standin_job(2))
        assert r.restarts == 2
