"""Motion blur (ClipSpec.shutter > 0, issue 26; blender/motion_blur.py) on real Blender renders of the built-in walk.

The blurred clip's ground truth is exactly the unblurred clip's (the shutter's centre): every file but the
video, its thumbnail and the manifest is byte-identical. Its RGB differs only near the moving body: within
SHUTTER / 2 x (the fastest vertex's motion in pixels to a neighbouring frame) + 2 px of a body pixel of the
frame or its neighbours (a surface point seen during the open shutter is at most half the shutter's share of
its path to the neighbouring frame away from where it is at the frame; 2 px for the pixel grid). The manifest
says so. Frames shared among processes blur as in one process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from test_render_blender import walk_spec

from farm.core.spec import CameraMotion
from farm.render.client import BlenderProcessRenderer, ParallelRenderer
from farm.render.job import (
    MOTION_BLUR_SAMPLES,
    RESULT_ARRAYS,
    FrameSink,
    Progress,
    RenderJob,
    RenderOptions,
    RenderResult,
)
from farm.render.prepare import prepare_clip
from worker.output import render_clip_files
from worker.video import read_mp4

pytestmark = pytest.mark.blender

FRAMES = 5  # odd: two processes get 3 and 2 frames
SHUTTER = 0.5
NOT_GROUND_TRUTH = (".mp4", "_thumb.jpg", "_manifest.json")


class Keep:
    """A renderer that keeps its last RenderResult (the RGB before the video encodes it)."""

    def __init__(self, renderer: BlenderProcessRenderer | ParallelRenderer) -> None:
        self.renderer = renderer
        self.result: RenderResult | None = None

    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult:
        self.result = self.renderer.render(job, progress, sink)
        return self.result

    def close(self) -> None:
        self.renderer.close()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The walk (surreal convention) rendered into files without blur in one process and with blur in two
    processes sharing its frames; then the blurred job once more in one process, and the plain one again."""
    root = tmp_path_factory.mktemp("blur")
    spec = walk_spec(convention="surreal")
    blurred = spec.model_copy(update={"shutter": SHUTTER})
    out = {}
    with BlenderProcessRenderer(RenderOptions(timeout_s=300)) as one:
        keep = Keep(one)
        out["plain"] = render_clip_files(spec, keep, root / "plain", frames=FRAMES)
        out["plain_result"] = keep.result
        with ParallelRenderer(RenderOptions(timeout_s=300, processes=2)) as two:
            keep = Keep(two)
            out["blur"] = render_clip_files(blurred, keep, root / "blur", frames=FRAMES)
            out["blur_result"] = keep.result
        out["blur_one_process"] = one.render(prepare_clip(blurred, frames=FRAMES).job)
        out["plain_again"] = one.render(prepare_clip(spec, frames=FRAMES).job)  # after a blurred clip
    out["root"] = root
    out["job"] = prepare_clip(spec, frames=FRAMES).job
    return out


def _files(clips: dict, which: str) -> dict[str, Path]:
    root: Path = clips["root"] / which
    return {f.name: root / f for f in clips[which].files}


def test_ground_truth_files_are_those_without_blur(clips):
    plain, blur = _files(clips, "plain"), _files(clips, "blur")
    assert plain.keys() == blur.keys()
    truth = [name for name in plain if not name.endswith(NOT_GROUND_TRUTH)]
    assert len(truth) == 5  # info, depth, segm, gtflow, normal
    for name in truth:
        assert plain[name].read_bytes() == blur[name].read_bytes(), name
    video = next(name for name in plain if name.endswith(".mp4"))
    assert plain[video].read_bytes() != blur[video].read_bytes()


def test_every_pass_but_rgb_is_the_shutters_centre(clips):
    plain, blur, one = clips["plain_result"], clips["blur_result"], clips["blur_one_process"]
    for name in RESULT_ARRAYS:
        if name != "rgb":
            assert np.array_equal(getattr(plain, name), getattr(blur, name)), name
    assert np.array_equal(blur.rgb, one.rgb)  # two processes sharing the frames blur as one does


def test_a_blurred_clip_leaves_the_warm_process_as_it_was(clips):
    plain, again = clips["plain_result"], clips["plain_again"]
    for name in RESULT_ARRAYS:
        assert np.array_equal(getattr(plain, name), getattr(again, name)), name


def _vertex_speed_px(job: RenderJob) -> np.ndarray:
    """(T,) the fastest vertex's motion in pixels between frame t and either neighbour."""
    cam = job.camera
    px = cam.project(cam.body_to_world(np.asarray(job.vertices, np.float64)))  # (T, V, 2)
    step = np.linalg.norm(np.diff(px, axis=0), axis=-1).max(axis=1)  # (T - 1,) t -> t + 1
    return np.maximum(np.r_[step[:1], step], np.r_[step, step[-1:]])


def test_rgb_differs_only_near_the_moving_body(clips):
    plain, blur = clips["plain_result"], clips["blur_result"]
    speed = _vertex_speed_px(clips["job"])
    T = len(plain.rgb)
    for t in range(T):
        differs = (plain.rgb[t] != blur.rgb[t]).any(axis=-1)
        body = (plain.segm[max(0, t - 1) : t + 2] > 0).any(axis=0)
        assert body.any() and differs.sum() > 0.3 * (plain.segm[t] > 0).sum(), t  # it is blurred
        distance = distance_transform_edt(~body)  # pixels to the nearest body pixel of t - 1, t, t + 1
        bound = SHUTTER / 2 * speed[t] + 2.0
        assert distance[differs].max() <= bound, (t, distance[differs].max(), bound)
        # Far from the body the background is exactly the unblurred one.
        far = distance > bound
        assert far.mean() > 0.8 and np.array_equal(plain.rgb[t][far], blur.rgb[t][far]), t


def test_the_video_holds_the_blurred_frames(clips):
    """The writer encodes frames as they finish: it must get the blurred RGB, not the sharp one first."""
    plain, blur = clips["plain_result"], clips["blur_result"]
    video = next(p for name, p in _files(clips, "blur").items() if name.endswith(".mp4"))
    decoded = read_mp4(video, 320, 240, FRAMES).astype(np.float64)
    differs = (plain.rgb != blur.rgb).any(axis=-1)
    to_blur = np.abs(decoded - blur.rgb)[differs].mean()
    to_plain = np.abs(decoded - plain.rgb)[differs].mean()
    assert to_blur < 0.7 * to_plain, (to_blur, to_plain)


def test_the_manifest_says_so(clips):
    manifests = {}
    for which in ("plain", "blur"):
        name = next(n for n in _files(clips, which) if n.endswith("_manifest.json"))
        manifests[which] = json.loads(_files(clips, which)[name].read_text())
    plain, blur = manifests["plain"], manifests["blur"]
    assert "motion_blur" not in plain and "shutter" not in plain["spec"]  # a default clip's as before
    assert blur["motion_blur"] == {
        "shutter": SHUTTER,
        "samples": MOTION_BLUR_SAMPLES,
        "note": "RGB only: every other pass is the shutter's centre (the frame's own time, as without blur)",
    }
    assert blur["spec"]["shutter"] == SHUTTER
    truth = {f["name"]: f for f in plain["files"] if not f["name"].endswith(NOT_GROUND_TRUTH)}
    assert truth == {f["name"]: f for f in blur["files"] if not f["name"].endswith(NOT_GROUND_TRUTH)}
    assert plain["qc"] == blur["qc"]


def test_a_moving_camera_blurs_the_background_too_and_keeps_the_truth():
    """Each sample has the camera and the background of its own time; the ground truth stays the frame's."""
    motion = CameraMotion(
        mode="follow+handheld+zoom", lag_s=0.3, shake_deg=1.5, shake_hz=2.0, shake_seed=3, zoom=1.5
    )
    spec = walk_spec(convention="surreal", camera_motion=motion)
    plain = prepare_clip(spec, frames=3).job
    blurred = prepare_clip(spec.model_copy(update={"shutter": 1.0}), frames=3).job
    with ParallelRenderer(RenderOptions(timeout_s=300, processes=2)) as two:
        a, b = two.render(plain), two.render(blurred)
    with BlenderProcessRenderer(RenderOptions(timeout_s=300)) as one:
        c = one.render(blurred)
    for name in RESULT_ARRAYS:
        if name != "rgb":
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(b.rgb, c.rgb)
    background = (a.segm[1:] == 0) & (b.segm[1:] == 0)  # frames 1, 2: the camera turns and zooms
    assert (a.rgb[1:] != b.rgb[1:]).any(axis=-1)[background].mean() > 0.2
