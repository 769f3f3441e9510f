"""The quality gate (worker/qc.py): each problem found and named in one sentence, a good clip's statistics, the
writer and the worker refusing a bad clip, `farm qc` on stored clips, and on the demo's runner (real Blender)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.camera import make_camera
from farm.render.job import BACKGROUND_DEPTH, RenderResult
from worker.output import write_clip
from worker.qc import QualityError, assess
from worker.video import write_mp4

T, H, W = 4, 240, 320


def clip_arrays(frames: int = T, visible: int | None = None) -> dict[str, np.ndarray]:
    """A body (a 40x20 patch of parts 1..24) moving right by 60 px a frame, so it leaves the picture at frame 4
    (or after `visible` frames); flow magnitude 5 on the body."""
    visible = 3 if visible is None else visible
    rng = np.random.default_rng(0)
    segm = np.zeros((frames, H, W), np.uint8)
    for t in range(min(frames, visible)):
        x = 150 + 40 * t
        segm[t, 100:140, x : x + 20] = rng.integers(1, 25, (40, 20))
    fg = segm > 0
    return {
        "rgb": rng.integers(0, 256, (frames, H, W, 3), dtype=np.uint8),
        "alpha": fg.astype(np.float32),
        "depth": np.where(fg, 7.5, BACKGROUND_DEPTH).astype(np.float32),
        "normal": np.where(fg[..., None], [0.0, 0.0, -1.0], 0.0).astype(np.float32),
        "flow": np.where(fg[..., None], [3.0, -4.0], 0.0).astype(np.float32),
        "segm": segm,
        "inst": fg.astype(np.uint8),
    }


def joints(frames: int = T) -> np.ndarray:
    """joints2D (T, 24, 2): inside the image, except frame 4's, which are right of it."""
    j = np.random.default_rng(1).uniform([10, 10], [W - 10, H - 10], (frames, 24, 2)).astype(np.float32)
    j[3:, :, 0] += W
    return j


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rgb = clip_arrays()["rgb"]
    write_mp4(root / "good.mp4", rgb, 30)
    write_mp4(root / "short.mp4", rgb[:-1], 30)
    write_mp4(root / "small.mp4", np.ascontiguousarray(rgb[:, ::2, ::2]), 30)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return root


def check(videos, frames=T, convention="surreal", video="good.mp4", off=0.0, **changes):
    a = {**clip_arrays(), "joints2d": joints(), **changes}
    reprojected = a["joints2d"].astype(np.float64) + off
    return assess(
        frames,
        convention,
        (W, H),
        depth=a["depth"],
        segm=a["segm"],
        flow=a["flow"],
        normal=a["normal"],
        joints2d=a["joints2d"],
        reprojected=reprojected,
        video=videos / video,
    )


def test_a_good_clip_passes_with_its_statistics(videos):
    quality = check(videos, off=0.4)  # within half a pixel: the surreal convention rounds joints2D
    assert quality.ok, quality.problems
    assert quality.stats == {
        "frames": T,
        "frames_with_body": 3,
        "body_pixels_mean": 600.0,  # 3 frames of 800 body pixels over 4
        "joints_in_image": 0.75,
        "flow_mean": 5.0,
        "people": [{"pixels_mean": 600.0, "joints_in_image": 0.75}],
    }
    assert check(videos, convention="clean", off=1e-4).ok


def test_joints_far_outside_the_image_are_not_held_to_the_pixel(videos):
    """A joint near the camera's plane projects to ~1e5 px, where float32 storage moves it by pixels (a real
    clip: -578513 px stored, -578516.2 reprojected); within a frame's size of the image the rule holds."""
    j = joints()
    j[0, 0] = (-578513.0, 271324.0)
    a = clip_arrays()
    reprojected = j.astype(np.float64)
    reprojected[0, 0] += (-3.23, 1.34)
    far_ok = assess(T, "surreal", (W, H), **{k: a[k] for k in ("depth", "segm", "flow", "normal")},
                    joints2d=j, reprojected=reprojected, video=videos / "good.mp4")  # fmt: skip
    assert far_ok.ok, far_ok.problems
    reprojected[0, 1] += 0.7  # a joint inside the image
    assert not assess(T, "surreal", (W, H), **{k: a[k] for k in ("depth", "segm", "flow", "normal")},
                      joints2d=j, reprojected=reprojected, video=videos / "good.mp4").ok  # fmt: skip


def with_nan(name, index):
    a = clip_arrays()[name].copy()
    a[index] = np.nan
    return a


def segm_with(index, label):
    s = clip_arrays()["segm"].copy()
    s[index] = label
    return s


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"frames": 5}, ["depth, segm, flow, normal and joints2D have 4 frames, the spec says 5.", "the mp4 decodes to 4 frames, the spec says 5."]),
        ({"flow": with_nan("flow", (1, 0, 0, 0))}, ["flow has 1 non-finite value in frame 2."]),
        ({"normal": with_nan("normal", (slice(1, 3), 5))}, ["normal has 1,920 non-finite values in 2 frames from frame 2."]),
        (
            {"depth": with_nan("depth", (2, 110, 160))},
            ["depth has 1 non-finite value in frame 3.", "segm and depth disagree on 1 pixel in frame 3"],
        ),
        ({"segm": segm_with((0, 0, 0), 5)}, ["segm and depth disagree on 1 pixel in frame 1 (want segm > 0"]),
        ({"segm": segm_with((1, 100, 190), 30)}, ["segm holds labels 0..30 on 1 pixel in frame 2, want 0..24."]),
        (
            {"depth": np.where(clip_arrays()["segm"] > 0, -1.0, BACKGROUND_DEPTH).astype(np.float32)},
            ["depth is not positive on 2,400 body pixels in 3 frames from frame 1."],
        ),
        ({"off": 0.6}, ["joints2D lie up to 0.6 px from the projection of joints3D in 4 frames from frame 1 (allowed 0.501 px in the surreal convention)."]),
        ({"off": 0.05, "convention": "clean"}, ["joints2D lie up to 0.05 px from the projection of joints3D in 4 frames from frame 1 (allowed 0.01 px in the clean convention)."]),
        ({"video": "short.mp4"}, ["the mp4 decodes to 3 frames, the spec says 4."]),
        ({"video": "small.mp4"}, ["the mp4's frames are 160x120, want 320x240."]),
        ({"video": "corrupt.mp4"}, ["the mp4 does not decode ("]),
        ({"depth": clip_arrays()["depth"][:, ::2, ::2]}, ["depth has frames of shape 120x160, want 240x320."]),
    ],
    ids=["frames", "nan-flow", "nan-normal", "nan-depth", "disagree", "label", "depth-sign", "joints-surreal",
         "joints-clean", "mp4-short", "mp4-size", "mp4-corrupt", "shape"],
)  # fmt: skip
def test_each_problem_is_found_and_named_in_one_sentence(videos, changes, expected):
    quality = check(videos, **changes)
    assert not quality.ok
    assert len(quality.problems) == len(expected), quality.problems
    for problem, start in zip(quality.problems, expected, strict=True):
        assert problem.startswith(start), quality.problems
        assert problem.endswith(".") and "\n" not in problem and problem.count(". ") == 0, problem


def spec(frames: int = T, name: str = "01_01_c0001") -> ClipSpec:
    return ClipSpec(
        name=name, catalog="cmu", sequence="01_01", split="train", run=0, clip_index=0, stride=50,
        frame_start=0, frame_count=frames,
        motion=MotionRef(uri="x.npz", pose_key="pose_01_01", trans_key="trans_01_01", rate=120, frames=999),
        seed=1, body_model="smpl", gender="female", shape=(0.0,) * 10, shape_source="bank#0",
        texture="textures/f1.jpg", background="bg/kitchen1.jpg", light=(0.5,) + (0.0,) * 8,
        camera=CameraSpec(distance=8.0), zrot=0.0,
    )  # fmt: skip


def write(root, s: ClipSpec, frames: int | None = None, **changes):
    """write_clip of `frames` rendered frames (the spec's count by default) of clip_arrays, with changes."""
    camera = make_camera(s, np.array([0.0, 0.9, 0.0]))
    n = frames or s.frame_count
    body = np.random.default_rng(2).normal(size=(n, 24, 3)) * 0.3 + [0.0, 0.9, 0.0]
    world = camera.body_to_world(body).astype(np.float32)
    result = RenderResult(**{**clip_arrays(n), **changes}, software={"blender": "test"})  # type: ignore[arg-type]
    return write_clip(root, s, result, np.zeros((n, 72), np.float32), world, camera)


def test_the_writer_stores_the_statistics_and_refuses_a_bad_clip(tmp_path):
    files = write(tmp_path / "good", spec())
    manifest = json.loads((files.directory / "01_01_c0001_manifest.json").read_text())
    assert manifest["qc"] == files.qc and files.qc["frames_with_body"] == 3 and files.qc["flow_mean"] == 5.0

    bad = tmp_path / "bad"
    with pytest.raises(
        QualityError, match=r"01_01_c0001 failed the quality gate: flow has 1 non-finite value"
    ):
        write(bad, spec(), flow=with_nan("flow", (0, 110, 155, 1)))
    assert list((bad / spec().output_dir).iterdir()) == []  # no file under a final name, no temporary folder
    with pytest.raises(
        QualityError, match="depth, segm, flow, normal and joints2D have 4 frames, the spec says 5"
    ):
        write(bad, spec(5), frames=4)  # a render that came back short
    assert list((bad / spec().output_dir).iterdir()) == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_clip_failing_the_gate_is_not_done_and_farm_qc_checks_the_stored_ones(
    where, request, farm, farm_env, tmp_path, monkeypatch
):
    """Embedded SQLite, storage in a folder or on S3 (SeaweedFS): one clip passes (body visible in 1 of 3
    frames), one fails the gate; then `farm qc` reads the done one back."""
    from farm.core.settings import get_settings
    from farm.core.storage import open_storage
    from worker.process import WorkerContext, process_clip

    farm_env(max_attempts="1")
    if where == "s3":
        seaweed = request.getfixturevalue("seaweed")
        seaweed.ensure_running()
        prefix = f"qc-{np.random.default_rng().integers(1 << 32):08x}"
        farm_env(storage_url=f"s3://{seaweed.bucket}/{prefix}", **request.getfixturevalue("s3_credentials"))
    assert farm("catalog", "import", "builtin").code == 0
    assert (
        json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", "2", "--json").out)["new_clips"]
        == 2
    )
    run = farm("qc")
    assert run.code == 0 and "has no done clips to check" in run.out, run.err  # as `farm verify`: no error
    with sqlite3.connect("farm.db") as conn:  # 3-frame clips, so that the stand-in's arrays stay small
        for clip_id, raw in conn.execute("SELECT id, spec FROM clips").fetchall():
            conn.execute(
                "UPDATE clips SET spec = ?, frame_stop = frame_start + 3 WHERE id = ?",
                (json.dumps({**json.loads(raw), "frame_count": 3}), clip_id),
            )

    def produce(s, folder):
        arrays = clip_arrays(3, visible=1)  # the body is in the first frame only
        if s.name == second:  # labels past 24
            arrays["segm"] = np.where(arrays["segm"] > 0, 99, 0).astype(np.uint8)
        files = write(folder, s, **arrays)
        return files.files, files.frames, files.qc

    with sqlite3.connect("farm.db") as conn:
        second = conn.execute("SELECT name FROM clips WHERE id = 2").fetchone()[0]
    settings = get_settings()
    storage = open_storage(settings)
    context = WorkerContext(settings, "qc-test:1", produce, storage)
    assert process_clip(1, context) == "done"
    assert process_clip(2, context) == "failed"
    with sqlite3.connect("farm.db") as conn:
        rows = conn.execute(
            "SELECT status, error, qc, frames_with_body, spec FROM clips ORDER BY id"
        ).fetchall()
    (done, _, qc, body, spec1), (failed, error, no_qc, no_body, spec2) = rows
    assert (
        done == "done" and json.loads(qc)["frames_with_body"] == body == 1 and json.loads(qc)["frames"] == 3
    )
    assert failed == "failed" and no_qc is None and no_body is None
    assert "failed the quality gate: segm holds labels 0..99" in error and "want 0..24." in error
    name1, name2 = json.loads(spec1)["name"], json.loads(spec2)["name"]
    folder1 = ClipSpec.model_validate(json.loads(spec1)).output_dir
    folder2 = ClipSpec.model_validate(json.loads(spec2)).output_dir
    for suffix in (".mp4", "_info.mat", "_segm.mat", "_manifest.json"):  # nothing of the failed clip stored
        assert storage.stat(f"{folder2}/{name2}{suffix}") is None
        assert storage.stat(f"{folder1}/{name1}{suffix}") is not None
    assert json.loads(farm("status", "--json").out)["body_out_of_frame"] == 1
    assert "body out of frame in more than half their frames: 1" in farm("status").out

    run = farm("qc", "--json")  # the database's done clips, read back from storage
    assert run.code == 0, run.err
    (report,) = json.loads(run.out)
    assert report["clip"] == name1 and report["ok"] and report["problems"] == []
    assert {k: report[k] for k in json.loads(qc)} == json.loads(qc)  # recomputed from the files: the same
    run = farm("qc")
    assert run.code == 0 and name1 in run.out and "1 passes the quality gate" in run.out
    storage.delete(f"{folder1}/{name1}_gtflow.mat")
    run = farm("qc", "--json")
    assert run.code == 1 and json.loads(run.out)[0]["problems"] == [f"{name1}_gtflow.mat is missing."]
    if where == "s3":
        return

    folder = tmp_path / "farm-output" / folder1
    (folder / f"{name1}_depth.mat").write_bytes(b"MATLAB 5.0 truncated")
    (folder / f"{name1}.mp4").unlink()
    run = farm("qc", str(tmp_path / "farm-output"), "--json")  # the same, from the folder
    assert run.code == 1
    (report,) = json.loads(run.out)
    assert not report["ok"] and report["frames_with_body"] == 1  # segm still reads
    problems = report["problems"]
    assert len(problems) == 3 and problems[1:] == [
        f"{name1}_gtflow.mat is missing.",
        f"{name1}.mp4 is missing.",
    ]
    assert problems[0].startswith(f"{name1}_depth.mat cannot be read ("), problems

    (tmp_path / "empty").mkdir()
    run = farm("qc", str(tmp_path / "empty"))
    assert run.code == 3 and "no clips under" in run.err and "Traceback" not in run.err
    run = farm("qc", str(tmp_path / "nowhere"))
    assert run.code == 3 and "is not a folder" in run.err


@pytest.mark.blender
def test_farm_qc_finds_the_demo_runner_leaving_the_picture(farm, farm_env, tmp_path):
    """The demo's run_s01_01_c0001 runs out of the picture partway through; its walker stays in it."""
    farm_env(database_url=f"sqlite:///{tmp_path / 'farm.db'}")
    assert farm("catalog", "import", "builtin").code == 0
    out = tmp_path / "out"
    for sequence in ("run_s01_01", "walk_s01_01"):  # the demo's clips: clip 1 of run 0
        run = farm("render-clip", "--sequence", sequence, "--run", "0", "--clip", "0", "--out", str(out))
        assert run.code == 0, run.err
    run = farm("qc", str(out), "--json")
    assert run.code == 0, run.out
    clips = {c["clip"]: c for c in json.loads(run.out)}
    assert set(clips) == {"run_s01_01_c0001", "walk_s01_01_c0001"} and all(c["ok"] for c in clips.values())
    runner, walker = clips["run_s01_01_c0001"], clips["walk_s01_01_c0001"]
    assert runner["frames_with_body"] < walker["frames_with_body"]
    assert 0 < runner["frames_with_body"] < runner["frames"]
    assert runner["joints_in_image"] < walker["joints_in_image"]


def test_instances_and_boxes_of_several_people_are_checked(videos):
    """Two people: inst must agree with segm and name only the clip's people; visible joints lie in their box."""
    a = clip_arrays()
    inst = a["inst"].copy()
    inst[:, 100:140, 160:170] *= 2  # the right half of the patch is person 2
    j = np.stack([joints(), joints()])  # (2, T, 24, 2)
    visible = np.zeros((2, 24, T), bool)
    bbox = np.full((2, 4, T), np.nan, np.float32)
    bbox[:, :, :3] = [[[0.0], [0.0], [W], [H]]]

    def gate(**changes):
        c = {"inst": inst, "visible": visible, "bbox": bbox, "segm": a["segm"], **changes}
        return assess(
            T, "surreal", (W, H), depth=a["depth"], segm=c["segm"], flow=a["flow"], normal=a["normal"],
            joints2d=j, reprojected=j.astype(np.float64), video=videos / "good.mp4", people=2, inst=c["inst"],
            visible=c["visible"], bbox=c["bbox"],
        )  # fmt: skip

    good = gate()
    assert good.ok, good.problems
    assert [p["pixels_mean"] for p in good.stats["people"]] == [500.0, 100.0]  # person 2: half of frame 1
    assert [p["frames_visible"] for p in good.stats["people"]] == [3, 3]
    stray = inst.copy()
    stray[0, 0, 0] = 1  # a person pixel where segm shows background
    stray[1, 100, 195] = 3  # a third person in a clip of two
    problems = gate(inst=stray).problems
    assert any("inst and segm disagree on 1 pixel in frame 1" in p for p in problems), problems
    assert any(
        "inst names a person the clip lacks on 1 pixel in frame 2 (it has 2 people)" in p for p in problems
    )
    outside = visible.copy()
    outside[1, 0, 3] = True  # frame 4 shows nobody: its box is NaN
    assert gate(visible=outside).problems == ["1 visible joint lies outside the person's bbox in frame 4."]
