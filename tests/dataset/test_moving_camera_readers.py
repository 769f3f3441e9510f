"""Issue 26's readers on clips written by the writer (worker/output.py) without Blender: a moving camera's
camK/camR/camT and `<name>_corr.mat` read by the bounded reader, converted to the clean convention by the
dataset frame by frame, carried by the shards, checked by `farm qc` and drawn by the contact sheet. A clip
without them reads as before (the other tests of tests/dataset and tests/worker)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from farm.core.spec import CameraMotion
from farm.dataset.clips import ClipFileError, load_clip, read_manifest, surreal_to_clean
from farm.render.camera import make_camera
from farm.render.camera_motion import CameraPath, background_flow
from farm.render.job import RenderResult
from worker.clip_files import BadClipFile, read_corr, read_info
from worker.output import savemat, write_clip
from worker.qc import assess_files, clip_suffixes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
from test_qc import clip_arrays, spec  # noqa: E402
from walk_clip import render_walk  # noqa: E402

NAME = "01_01_c0001"
T, H, W = 4, 240, 320
MOTION = CameraMotion(mode="follow+handheld+zoom", lag_s=0.3, shake_deg=0.5, shake_hz=1.0, zoom=1.5)
PELVIS0 = np.array([0.0, 0.9, 0.0])


@dataclass(frozen=True)
class Swinging(CameraPath):
    """A camera path turning and zooming fast (pan 2, tilt -1.2, roll 0.6 degrees and 15% zoom a frame), so that
    a few frames hold very different cameras; frame 0 is the static camera, as every CameraPath's."""

    def angles(self, time: np.ndarray) -> np.ndarray:
        time = np.atleast_1d(np.asarray(time, np.float64))
        return np.radians(np.stack([2.0 * time, -1.2 * time, 0.6 * time], -1))

    def zoom(self, time: np.ndarray) -> np.ndarray:
        return 1.0 + 0.15 * np.atleast_1d(np.asarray(time, np.float64))


def moving_spec(convention: str = "surreal", moving: bool = True):
    return spec().model_copy(update={"convention": convention, "camera_motion": MOTION if moving else None})


def write_moving(root: Path, convention: str = "surreal", moving: bool = True):
    """write_clip of clip_arrays with the Swinging camera (or the static one): the background's flow is the
    camera's (farm/render/camera_motion.py background_flow), in the convention's sign. Returns (files, camera)."""
    s = moving_spec(convention, moving)
    camera = make_camera(s, PELVIS0)
    if moving:
        path = Swinging(MOTION, camera.K, camera.R, camera.location, np.zeros((T, 2)), s.fps)
        camera = replace(camera, path=path)
    body = np.random.default_rng(2).normal(size=(T, 24, 3)) * 0.3 + PELVIS0
    body[0, 0] = PELVIS0  # the frame-0 pelvis, which places the camera (the reader's make_camera too)
    world = camera.body_to_world(body).astype(np.float32)
    arrays = clip_arrays(T)
    if moving:
        fg = arrays["segm"] > 0
        bg = np.stack([background_flow(path, t, convention, W, H, camera.pixel_centre) for t in range(T)])
        arrays["flow"] = np.where(fg[..., None], arrays["flow"], bg).astype(np.float32)
    result = RenderResult(**arrays, software={"blender": "test"})  # type: ignore[arg-type]
    return write_clip(root, s, result, np.zeros((T, 72), np.float32), world, camera), camera


def rewrite_info(path: Path, **changes) -> None:
    """_info.mat again with some keys changed (None: removed)."""
    info = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    for key, value in changes.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = value
    savemat(path, info)


def add_correspondence(
    folder: Path, convention: str = "surreal", damage: bool = False
) -> dict[str, np.ndarray]:
    """`<name>_corr.mat` as the writer stores it (as stored: flipped in the surreal convention, NaN off the body)
    and the manifest's spec asking for it; returns the stored {uv, canon} (T, H, W, C)."""
    segm = np.stack([scipy.io.loadmat(folder / f"{NAME}_segm.mat")[f"segm_{t}"] for t in range(1, T + 1)])
    fg = segm > 0
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    uv = np.stack([cols / W, rows / H], -1)[None].repeat(T, 0)
    canon = np.stack([cols * 0.01, rows * 0.01, np.ones_like(cols) * 0.1], -1)[None].repeat(T, 0)
    stored = {
        "uv": np.where(fg[..., None], uv, np.nan).astype(np.float32),
        "canon": np.where(fg[..., None], canon, np.nan).astype(np.float32),
    }
    if damage:
        r, c = np.argwhere(fg[1])[0]
        stored["uv"][1, r, c, 0] = np.nan  # a body pixel without its UV
    savemat(
        folder / f"{NAME}_corr.mat",
        {f"{k}_{t + 1}": stored[k][t] for t in range(T) for k in ("uv", "canon")},
    )
    manifest_path = folder / f"{NAME}_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["spec"]["correspondence"] = True
    manifest_path.write_text(json.dumps(manifest))
    return stored


@pytest.fixture(params=["surreal", "clean"])
def moving(request, tmp_path):
    files, camera = write_moving(tmp_path / "clips", request.param)
    return files.directory, camera, request.param


def test_the_info_reader_accepts_a_moving_cameras_keys_within_bounds(moving, tmp_path):
    folder, camera, _ = moving
    path = folder / f"{NAME}_info.mat"
    info = read_info(path, T)
    stored = scipy.io.loadmat(path)
    assert {"camK", "camR", "camT"} <= set(info)
    assert info["camK"].shape == info["camR"].shape == (3, 3, T) and info["camT"].shape == (3, T)
    for key in ("camK", "camR", "camT"):
        assert info[key].dtype == np.float32 and np.array_equal(info[key], stored[key]), key
    K, R, t = camera.frames(T)
    assert np.allclose(info["camK"].transpose(2, 0, 1), K, atol=1e-3)
    assert np.allclose(info["camR"].transpose(2, 0, 1), R, atol=1e-6)
    rewrite_info(path, camK=np.zeros((3, 3, T + 1), np.float32))
    with pytest.raises(BadClipFile, match=r"declares camK as 3x3x5, not the 3x3x4 numbers its spec says$"):
        read_info(path, T)


def test_a_moving_surreal_clip_reads_as_clean_frame_by_frame(tmp_path):
    """The item's per-frame K, R, t come from camK/camR/camT turned into the clean convention: they reproject
    joints3D onto joints2D (the stored ones unflipped, within the original's rounding), frame 0 is the static
    camera's, the centre stays put; depth is planar with each frame's K, normals turned by each frame's R, and
    the background's forward flow is each frame's camera motion."""
    files, _ = write_moving(tmp_path / "moving")
    static, _ = write_moving(tmp_path / "static", moving=False)
    ref = read_manifest(files.directory, NAME)
    item = load_clip(ref)
    still = load_clip(read_manifest(static.directory, NAME))
    K, R, t = (item[k].astype(np.float64) for k in ("K", "R", "t"))
    assert K.shape == R.shape == (T, 3, 3) and t.shape == (T, 3)

    # joints: the item's own projection, and the stored joints2D unflipped (pixel c -> W - 1 - c, centres -0.5)
    x = np.einsum("tij,tkj->tki", R, item["joints3D"].astype(np.float64)) + t[:, None]
    x = np.einsum("tij,tkj->tki", K, x)
    assert np.abs(x[..., :2] / x[..., 2:] - item["joints2D"]).max() < 1e-3
    stored = read_info(files.directory / f"{NAME}_info.mat", T)["joints2D"].transpose(2, 1, 0)
    unflipped = np.stack([W - 0.5 - stored[..., 0], stored[..., 1] - 0.5], -1)
    assert np.abs(unflipped - item["joints2D"]).max() <= 0.5 + 1e-3
    assert np.abs(still["joints2D"][0] - item["joints2D"][0]).max() < 1e-3

    # the cameras: proper rotations, frame 0 the static one, one centre, zooming and turning
    assert np.allclose(np.linalg.det(R), 1.0, atol=1e-5)
    for key in ("K", "R", "t"):
        assert np.allclose(item[key][0], still[key][0], atol=1e-4), key
    centre = -np.einsum("tji,tj->ti", R, t)
    assert np.ptp(centre, axis=0).max() < 1e-4
    assert np.allclose(K[:, 0, 0], 600 * (1 + 0.15 * np.arange(T)), rtol=1e-5)
    assert np.allclose(K[:, :2, 2], [W / 2 - 0.5, H / 2 - 0.5], atol=1e-4)  # the original's unshifted centres
    assert np.degrees(np.arccos((np.trace(R[-1] @ R[0].T) - 1) / 2)) > 5

    fg = item["segm"] > 0
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    for f in range(T):
        # depth: the stored 7.5 m along frame f's ray, planar with frame f's K
        ray = np.sqrt(1 + ((cols - K[f, 0, 2]) / K[f, 0, 0]) ** 2 + ((rows - K[f, 1, 2]) / K[f, 1, 1]) ** 2)
        assert np.allclose(item["depth"][f][fg[f]], (7.5 / ray)[fg[f]], rtol=1e-5)
        assert (item["depth"][f][~fg[f]] == 1e10).all()
        # normals: the stored world normal (0, 0, -1) of the surreal world, in frame f's clean camera
        A, _, _ = surreal_to_clean(
            ref.spec, read_info(files.directory / f"{NAME}_info.mat", T)["joints3D"][:, 0, 0]
        )
        want = R[f] @ A @ [0.0, 0.0, -1.0]
        assert np.allclose(item["normal"][f][fg[f]], want, atol=1e-5)
        assert (item["normal"][f][~fg[f]] == 0).all()
    # the background moves: its forward flow is the homography of the item's own cameras
    p = np.stack([cols, rows, np.ones_like(cols)], -1).astype(np.float64)
    for f in range(T - 1):
        q = p @ (K[f + 1] @ R[f + 1] @ R[f].T @ np.linalg.inv(K[f])).T
        flow = q[..., :2] / q[..., 2:] - p[..., :2]
        inside = (q[..., 0] / q[..., 2] > 2) & (q[..., 0] / q[..., 2] < W - 3)
        inside &= (q[..., 1] / q[..., 2] > 2) & (q[..., 1] / q[..., 2] < H - 3)
        ground = inside & ~fg[f] & ~fg[f + 1]
        ground[90:150] = False  # rows near the body, whose flow is the synthetic body's
        error = np.linalg.norm(item["flow"][f] - flow, axis=-1)[ground]
        # nearest-pixel steps: the 15% zoom a frame changes the flow by 0.15 px a pixel
        assert ground.sum() > 20000 and np.median(error) < 0.1 and np.percentile(error, 99) < 1.0, f
        assert np.median(np.linalg.norm(flow, axis=-1)[ground]) > 5  # and it does move
    assert (item["flow"][-1] == 0).all()
    assert (still["flow"][0][~(still["segm"][0] > 0)] == 0).all()  # a static camera's background does not


def test_a_moving_clean_clip_keeps_its_own_cameras(tmp_path):
    files, camera = write_moving(tmp_path / "clean", "clean")
    item = load_clip(read_manifest(files.directory, NAME))
    K, R, t = camera.frames(T)
    assert np.allclose(item["K"], K, atol=1e-3) and np.allclose(item["R"], R, atol=1e-6)
    assert np.allclose(item["t"], t, atol=1e-5)
    stored = read_info(files.directory / f"{NAME}_info.mat", T)["joints2D"].transpose(2, 1, 0)
    assert np.abs(stored - item["joints2D"]).max() < 1e-2
    flow = scipy.io.loadmat(files.directory / f"{NAME}_gtflow.mat")["gtflow_2"]
    assert np.array_equal(item["flow"][1], flow)  # clean flow is read as stored


def test_a_moving_cameras_keys_missing_are_one_sentence(moving):
    folder, _, convention = moving
    path = folder / f"{NAME}_info.mat"
    rewrite_info(path, camK=None)
    with pytest.raises(ClipFileError) as caught:
        load_clip(read_manifest(folder, NAME), with_rgb=False)
    assert str(caught.value) == (
        f"{path} holds camR, camT but lacks camK (a moving camera stores all three); it is corrupt, render the "
        "clip again"
    )
    assert assess_files(folder, NAME).problems == [
        f"{NAME}_info.mat holds camR, camT but lacks camK (a moving camera stores all three)."
    ]
    rewrite_info(path, camR=None, camT=None)
    with pytest.raises(ClipFileError, match="lacks camK, camR and camT, which a moving camera's clip stores"):
        load_clip(read_manifest(folder, NAME), with_rgb=False)
    assert assess_files(folder, NAME).problems[0] == (
        f"{NAME}_info.mat lacks camK, camR and camT, which a moving camera's clip stores."
    )


def test_farm_qc_reprojects_with_each_frames_camera(moving):
    """A good moving clip passes; a camR turned in one frame (still a proper camera) makes joints2D not
    reproject there; a camR that is no rotation is named; the fixed camera of camLoc is not used."""
    folder, _, convention = moving
    quality = assess_files(folder, NAME)
    assert quality.ok, quality.problems
    path = folder / f"{NAME}_info.mat"
    info = scipy.io.loadmat(path)
    camR = info["camR"].copy()
    c, s = np.cos(np.radians(1.0)), np.sin(np.radians(1.0))
    camR[:, :, 2] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ camR[:, :, 2]  # frame 3 turned by 1 degree
    rewrite_info(path, camR=camR.astype(np.float32))
    (problem,) = assess_files(folder, NAME).problems
    assert problem.startswith("joints2D lie up to ") and problem.endswith(
        f"px from the projection of joints3D in frame 3 (allowed {0.501 if convention == 'surreal' else 0.01:g} px "
        f"in the {convention} convention)."
    ), problem
    camR[:, :, 2] = info["camR"][:, :, 2] * 1.01  # no longer a rotation
    rewrite_info(path, camR=camR.astype(np.float32))
    problems = assess_files(folder, NAME).problems
    kind = "a reflection" if convention == "surreal" else "a rotation"
    assert problems[0] == f"camR is not {kind} (the {convention} convention's) in frame 3.", problems
    camT = info["camT"].copy()
    camT[:, 1] += 0.05
    rewrite_info(path, camR=info["camR"], camT=camT)
    (problem,) = assess_files(folder, NAME).problems
    assert problem.startswith("joints2D lie up to ") and "in frame 2 (" in problem, problem


def test_correspondence_is_read_checked_exported_and_drawn(tmp_path):
    from farm.cli.export import CORR_ARRAYS, shard_samples
    from worker.contact_sheet import contact_sheet_from_files

    files, _ = write_moving(tmp_path / "clips")
    folder = files.directory
    plain = contact_sheet_from_files(folder, NAME)
    stored = add_correspondence(folder)
    ref = read_manifest(folder, NAME)
    assert ref.spec.correspondence and clip_suffixes(1, True)[-1] == "_corr.mat"
    assert "_corr.mat" not in clip_suffixes(1) and "_corr.mat" not in clip_suffixes(2)
    corr = read_corr(folder / f"{NAME}_corr.mat", T, W, H)
    for key in ("uv", "canon"):
        assert np.array_equal(corr[key], stored[key], equal_nan=True), key

    item = load_clip(ref)
    fg = item["segm"] > 0
    assert item["uv"].shape == (T, H, W, 2) and item["canon"].shape == (T, H, W, 3)
    assert item["uv"].dtype == item["canon"].dtype == np.float32
    for key in ("uv", "canon"):  # unflipped like every image of a surreal clip
        assert np.array_equal(item[key], stored[key][:, :, ::-1], equal_nan=True), key
        assert np.isfinite(item[key][fg]).all() and np.isnan(item[key][~fg]).all()

    assert assess_files(folder, NAME).ok
    samples = list(shard_samples(item, "k", {}, "png"))  # compact: uv and canon as 16-bit PNG
    assert len(samples) == T and all({f"{k}.png16" for k in CORR_ARRAYS} <= set(s) for s in samples)
    raw = list(shard_samples(item, "k", {}, "png", "raw"))
    assert len(raw) == T and all({f"{k}.npy" for k in CORR_ARRAYS} <= set(s) for s in raw)
    assert contact_sheet_from_files(folder, NAME).width > plain.width  # one more column: UV as colour

    add_correspondence(folder, damage=True)
    assert assess_files(folder, NAME).problems == [
        "uv and segm disagree on 1 pixel in frame 2 (want finite values where segm > 0 and NaN elsewhere)."
    ]
    (folder / f"{NAME}_corr.mat").unlink()
    assert assess_files(folder, NAME).problems == [f"{NAME}_corr.mat is missing."]
    with pytest.raises(ClipFileError, match=f"{NAME}_corr.mat is missing; render the clip again"):
        load_clip(ref)


def test_a_corr_file_is_bounded_by_the_spec(tmp_path):
    from test_clip_files import mat_bomb

    path = tmp_path / f"{NAME}_corr.mat"
    frame2, frame3 = np.zeros((H, W, 2), np.float32), np.zeros((H, W, 3), np.float32)
    savemat(
        path,
        {**{f"uv_{t}": frame2 for t in range(1, T + 2)}, **{f"canon_{t}": frame3 for t in range(1, T + 1)}},
    )
    with pytest.raises(BadClipFile, match=r"holds uv_5, past the 4 frames its spec says$"):
        read_corr(path, T, W, H)
    savemat(path, {**{f"uv_{t}": frame2 for t in range(1, T + 1)}, "canon_1": frame3, "canon_2": frame3})
    with pytest.raises(BadClipFile, match=r"lacks canon_3 of the 4 frames its spec says$"):
        read_corr(path, T, W, H)
    assert read_corr(path, T, W, H, exact=False)["canon"].shape == (2, H, W, 3)
    savemat(path, {"uv_1": np.zeros((H, W, 3), np.float32)})
    with pytest.raises(
        BadClipFile, match="declares uv_1 as 240x320x3 float32 .* larger than the 240x320x2 float32"
    ):
        read_corr(path, T, W, H)
    bomb = mat_bomb(path, name="canon_1")
    with pytest.raises(BadClipFile, match="declares canon_1 as 20000x20000x1 float32"):
        read_corr(bomb, T, W, H)


def test_downloads_the_index_and_filters_know_the_new_file_and_fields(tmp_path):
    """fetch_clip downloads `_corr.mat` of a clip with correspondence (from a storage that is not a local
    folder); the export index names it; filters see camera_motion_* (a static camera's mode is "static")."""
    import shutil
    from types import SimpleNamespace

    from farm.cli.export import index_rows
    from farm.dataset.clips import FILTER_FIELDS, fetch_clip, matches, parse_filters

    files, _ = write_moving(tmp_path / "clips")
    add_correspondence(files.directory)
    raw = json.loads((files.directory / f"{NAME}_manifest.json").read_text())["spec"]
    root = tmp_path / "clips"

    class Remote:  # what fetch_clip uses of an S3 storage
        def get_file(self, key: str, local: Path) -> None:
            shutil.copyfile(root / key, local)

        def stat(self, key: str) -> object:
            return (root / key).stat() if (root / key).exists() else None

        def uri(self, key: str) -> str:
            return f"s3://bucket/{key}"

    ref = fetch_clip(Remote(), raw, tmp_path / "cache")  # type: ignore[arg-type]
    assert (ref.folder / f"{NAME}_corr.mat").is_file() and ref.folder.is_relative_to(tmp_path / "cache")
    assert load_clip(ref, with_rgb=False)["uv"].shape == (T, H, W, 2)

    clip = SimpleNamespace(id=1, spec=raw, qc=None, output_uri=None, render_seconds=None, checksums={})
    static = SimpleNamespace(**{**vars(clip), "spec": spec().model_dump(mode="json")})
    moving_row, static_row = index_rows([clip, static], Remote())
    assert moving_row["corr_uri"] == f"s3://bucket/{moving_spec().output_dir}/{NAME}_corr.mat"
    assert static_row["corr_uri"] is None and static_row["inst_uri"] is None
    assert (
        moving_row["camera_motion_mode"] == "follow+handheld+zoom" and moving_row["camera_motion_zoom"] == 1.5
    )
    assert static_row["camera_motion_mode"] == "static" and static_row["shutter"] == 0.0
    assert {"camera_motion_mode", "camera_motion_zoom", "shutter", "correspondence"} <= set(FILTER_FIELDS)
    following = parse_filters(["camera_motion_mode==follow+handheld+zoom"], FILTER_FIELDS)
    assert matches(following, raw, None) and not matches(following, static.spec, None)
    still = parse_filters(["camera_motion_mode==static", "correspondence==0"], FILTER_FIELDS)
    assert matches(still, static.spec, None) and not matches(still, raw, None)


MOVING_FRAMES = 5


def render_moving(root: Path) -> dict[str, Path]:
    """The built-in walk (tests/walk_clip.py) with a moving camera (scheduler.sampler's camera_motion_rand,
    "follow+handheld+zoom") and correspondence, rendered by Blender in both conventions: {convention: root}."""
    setup = (
        "import numpy as np\nfrom scheduler.sampler import camera_motion_rand\n"
        'motion = camera_motion_rand(np.random.default_rng(1), "follow+handheld+zoom")'
    )
    variants = {
        c: f'{{"camera_motion": motion, "convention": {c!r}, "correspondence": True}}'
        for c in ("surreal", "clean")
    }
    return render_walk(root, MOVING_FRAMES, variants, setup=setup)


@pytest.fixture(scope="module")
def rendered_moving(tmp_path_factory) -> dict[str, Path]:
    return render_moving(tmp_path_factory.mktemp("moving"))


@pytest.mark.blender
@pytest.mark.parametrize("convention", ["surreal", "clean"])
def test_a_rendered_moving_clip_reads_back_and_passes_qc(rendered_moving, convention, tmp_path):
    """A real moving-camera render: `farm qc` passes it; the clean item's per-frame K, R, t reproject joints3D
    to its joints2D and to the stored joints2D (unflipped for surreal, within its rounding); its background's
    flow is the cameras' motion; visible joints sit just behind the depth seen at them. A camR turned by a
    degree in one frame makes qc report joints2D not reprojecting there."""
    import shutil

    from farm.dataset.clips import PELVIS

    (manifest,) = rendered_moving[convention].rglob("*_manifest.json")
    folder, name = manifest.parent, manifest.name.removesuffix("_manifest.json")
    quality = assess_files(folder, name)
    assert quality.ok, quality.problems
    ref = read_manifest(folder, name)
    assert ref.spec.camera_motion is not None and ref.frames == MOVING_FRAMES
    item = load_clip(ref)
    K, R, t = (item[k].astype(np.float64) for k in ("K", "R", "t"))
    x = np.einsum(
        "tij,tkj->tki", K, np.einsum("tij,tkj->tki", R, item["joints3D"].astype(np.float64)) + t[:, None]
    )
    assert np.abs(x[..., :2] / x[..., 2:] - item["joints2D"]).max() < 1e-2
    stored = read_info(folder / f"{name}_info.mat", ref.frames)["joints2D"].transpose(2, 1, 0)
    if convention == "surreal":
        stored = np.stack([W - 0.5 - stored[..., 0], stored[..., 1] - 0.5], -1)
    assert np.abs(stored - item["joints2D"]).max() <= (0.5 + 1e-3 if convention == "surreal" else 1e-2)
    assert np.allclose(np.linalg.det(R), 1.0, atol=1e-5)
    assert np.ptp(-np.einsum("tji,tj->ti", R, t), axis=0).max() < 1e-4  # the centre stays put
    assert np.abs(R[-1] - R[0]).max() > 1e-4 or np.abs(K[-1] - K[0]).max() > 1e-3  # and the camera moves

    fg = item["segm"] > 0
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    p = np.stack([cols, rows, np.ones_like(cols)], -1).astype(np.float64)
    for f in range(ref.frames - 1):
        q = p @ (K[f + 1] @ R[f + 1] @ R[f].T @ np.linalg.inv(K[f])).T
        error = np.linalg.norm(item["flow"][f] - (q[..., :2] / q[..., 2:] - p[..., :2]), axis=-1)[~fg[f]]
        assert np.median(error) < 0.01 and np.percentile(error, 99) < 0.05, (f, np.median(error))
    # visible joints: the surface seen at them lies within 0.2 m in front of them (worker/visibility.py), planar
    z = (np.einsum("tij,tkj->tki", R, item["joints3D"].astype(np.float64)) + t[:, None])[..., 2]
    col, row = np.rint(item["joints2D"][..., 0]).astype(int), np.rint(item["joints2D"][..., 1]).astype(int)
    seen = item["visible"] & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    frame = np.broadcast_to(np.arange(ref.frames)[:, None], seen.shape)
    gap = z[seen] - item["depth"][frame[seen], row[seen], col[seen]]
    assert seen.sum() > 20 and np.median(gap) > 0 and np.percentile(np.abs(gap), 90) < 0.25
    assert (item["normal"][fg][:, 2] < 0.2).mean() > 0.95  # camera-frame normals face the camera
    for key in ("uv", "canon"):  # the correspondence: on the body exactly, unflipped with it
        assert np.isfinite(item[key][fg]).all() and np.isnan(item[key][~fg]).all(), key
    assert 0 <= item["uv"][fg].min() and item["uv"][fg].max() <= 1
    assert z[:, PELVIS].min() > 3

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    info = scipy.io.loadmat(copy / f"{name}_info.mat")
    camR = info["camR"].copy()
    c, s = np.cos(np.radians(1.0)), np.sin(np.radians(1.0))
    camR[:, :, 1] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ camR[:, :, 1]
    rewrite_info(copy / f"{name}_info.mat", camR=camR.astype(np.float32))
    (problem,) = assess_files(copy, name).problems
    assert (
        problem.startswith("joints2D lie up to ")
        and "from the projection of joints3D in frame 2 (" in problem
    )
