"""The body model: the free anny-based body's geometry and shape space, SMPL files, and motion driving it."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from farm.assets.body import BodyModel, load_body_model, load_free_shape_bank
from farm.assets.free_body import build_free_bodies, free_body_dir, mesh_edges
from farm.core.errors import FarmError
from farm.core.files import sha256_file
from farm.core.settings import Settings

L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST, L_KNEE, L_ANKLE = 16, 17, 20, 21, 4, 7


@pytest.fixture(scope="session")
def body_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A private cache with the free bodies built once for the whole test session."""
    settings = Settings(cache_dir=tmp_path_factory.mktemp("body-cache"))
    build_free_bodies(free_body_dir(settings.cache_dir))
    return settings


def rest(model: BodyModel, betas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    frames = model.evaluate(np.zeros((1, 72)), np.zeros(10) if betas is None else betas, np.zeros((1, 3)))
    return frames.vertices[0], frames.joints[0]


@pytest.mark.parametrize("gender", ["female", "male", "neutral"])
def test_free_body_stands_in_a_t_pose(body_settings: Settings, gender: str) -> None:
    model = load_body_model("free", gender, body_settings)
    verts, joints = rest(model)
    assert abs(joints[L_WRIST, 1] - joints[L_SHOULDER, 1]) < 0.05
    assert abs(joints[R_WRIST, 1] - joints[R_SHOULDER, 1]) < 0.05
    assert joints[L_WRIST, 0] > joints[L_SHOULDER, 0] + 0.3  # the left arm points along +x, as on SMPL
    left_sole = verts[np.isin(model.part_labels, (8, 11)), 1].min()
    right_sole = verts[np.isin(model.part_labels, (9, 12)), 1].min()
    assert abs(left_sole - right_sole) < 0.005
    height = verts[:, 1].max() - verts[:, 1].min()
    assert 1.6 <= height <= 1.9


def test_bending_the_left_knee_moves_the_ankle_backwards(body_settings: Settings) -> None:
    model = load_body_model("free", "female", body_settings)
    _, joints = rest(model)
    poses = np.zeros((1, 72))
    poses[0, 3 * L_KNEE] = np.pi / 2  # +90 degrees about x
    bent = model.evaluate(poses, np.zeros(10), np.zeros((1, 3))).joints[0]
    assert bent[L_ANKLE, 2] < joints[L_ANKLE, 2] - 0.3  # backwards is -z: the body faces +z
    assert bent[L_ANKLE, 1] > joints[L_ANKLE, 1] + 0.3
    np.testing.assert_allclose(bent[L_KNEE], joints[L_KNEE], atol=1e-6)


@pytest.mark.parametrize("gender", ["female", "male", "neutral"])
def test_ten_shape_components_explain_the_sampled_bodies(body_settings: Settings, gender: str) -> None:
    model = load_body_model("free", gender, body_settings)
    with np.load(model.path) as data:
        assert data["explained_variance"][-1] >= 0.95
        bank = data["shape_bank"]
    # Betas of the sampled bodies are standardised: mean 0, variance 1 per component.
    np.testing.assert_allclose(bank.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(bank.std(axis=0, ddof=1), 1.0, atol=1e-3)
    train, test = (load_free_shape_bank(gender, s, body_settings) for s in ("train", "test"))
    assert len(train) + len(test) == len(bank) and len(test) > 0
    # A larger first beta changes the body: shapes differ in height or girth.
    v0, _ = rest(model)
    v1, _ = rest(model, np.eye(10)[0] * 2.0)
    assert np.abs(v1 - v0).max() > 0.02


@pytest.mark.parametrize("gender", ["female", "male", "neutral"])
def test_the_shipped_shape_bank_is_the_one_the_build_writes(body_settings: Settings, gender: str) -> None:
    """Clips are planned from the shipped bank (no torch needed); it must be exactly the built bodies' bank, or
    a planned clip's betas would not be a sampled body of the model that renders it."""
    from farm.assets.free_body import shipped_shape_bank

    with np.load(load_body_model("free", gender, body_settings).path) as data:
        built = data["shape_bank"]
    shipped = shipped_shape_bank(gender)
    assert shipped.dtype == built.dtype and np.array_equal(shipped, built)


def test_part_labels_are_connected_regions_around_their_joints(body_settings: Settings) -> None:
    model = load_body_model("free", "neutral", body_settings)
    labels = model.part_labels
    assert labels.shape == (model.num_vertices,)
    assert set(np.unique(labels)) == set(range(1, 25))
    verts, joints = rest(model)
    edges = mesh_edges(model.faces)
    for label in range(1, 25):
        inside = np.flatnonzero(labels == label)
        e = edges[(labels[edges[:, 0]] == label) & (labels[edges[:, 1]] == label)]
        graph = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(labels),) * 2)
        _, comp = connected_components(graph, directed=False)
        assert len(np.unique(comp[inside])) == 1, f"label {label} is split"
        # Around its joint: the region's nearest vertex is within 12 cm of the joint.
        assert np.linalg.norm(verts[inside] - joints[label - 1], axis=1).min() < 0.12, f"label {label}"


def test_building_twice_gives_identical_files(body_settings: Settings, tmp_path: Path) -> None:
    again = build_free_bodies(tmp_path, genders=("male",))["male"]
    first = free_body_dir(body_settings.cache_dir) / "SMPL_MALE.npz"
    assert sha256_file(again) == sha256_file(first)


def test_smplx_loads_the_written_file(body_settings: Settings) -> None:
    import smplx
    import torch

    model = load_body_model("free", "male", body_settings)
    with np.load(model.path, allow_pickle=False) as data:
        smpl = smplx.SMPL(model_path=str(model.path), data_struct=smplx.utils.Struct(**dict(data)))
    rng = np.random.default_rng(3)
    poses = rng.normal(0, 0.3, (4, 72)).astype(np.float32)
    betas = rng.normal(0, 1, 10).astype(np.float32)
    trans = rng.normal(0, 1, (4, 3)).astype(np.float32)
    with torch.no_grad():
        out = smpl(
            betas=torch.from_numpy(betas)[None].expand(4, -1),
            global_orient=torch.from_numpy(poses[:, :3]),
            body_pose=torch.from_numpy(poses[:, 3:]),
            transl=torch.from_numpy(trans),
        )
    frames = model.evaluate(poses, betas, trans)
    np.testing.assert_allclose(frames.vertices, out.vertices.numpy(), atol=1e-5)
    assert frames.vertices.shape == (4, model.num_vertices, 3) and frames.vertices.dtype == np.float32
    assert frames.joints.shape == (4, 24, 3)


# --- licensed SMPL files -------------------------------------------------------------------------------


def test_a_missing_smpl_file_names_the_expected_files(tmp_path: Path) -> None:
    settings = Settings(smpl_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(FarmError) as err:
        load_body_model("smpl", "female", settings)
    message = str(err.value)
    assert "SMPL_FEMALE.pkl" in message and "basicModel_f_lbs_10_207_0_v1.0.0.pkl" in message
    assert "https://smpl.is.tue.mpg.de" in message
    with pytest.raises(FarmError, match="FARM_SMPL_DIR"):
        load_body_model("smpl", "male", Settings(smpl_dir=None, cache_dir=tmp_path / "cache"))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_holding_anything_but_arrays_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "SMPL_FEMALE.pkl").write_bytes(
        pickle.dumps({"v_template": np.zeros((3, 3)), "evil": _Exploit(marker)}, protocol=2)
    )
    with pytest.raises(FarmError, match="not array data"):
        load_body_model("smpl", "female", Settings(smpl_dir=tmp_path, cache_dir=tmp_path / "cache"))
    assert not marker.exists()


def _write_chumpy_style_pickle(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Pickle the arrays the way SMPL v1.0.0 did: chumpy Ch objects and a sparse J_regressor."""

    class Ch:  # what chumpy.ch.Ch pickles: its __dict__, the array under 'x'
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars = {"x"}
            self._itr = None
            self._make_dense = False

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy, ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    ch.Ch = Ch  # type: ignore[attr-defined]
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch
    try:
        kintree = arrays["kintree_table"].astype(np.uint32)  # SMPL writes the root's parent as 2**32 - 1
        data = {
            "v_template": Ch(arrays["v_template"].astype(np.float64)),
            "shapedirs": Ch(arrays["shapedirs"].astype(np.float64)),
            "posedirs": arrays["posedirs"].astype(np.float64),
            "J_regressor": sp.csc_matrix(arrays["J_regressor"].astype(np.float64)),
            "weights": arrays["weights"].astype(np.float64),
            "kintree_table": kintree,
            "f": arrays["f"].astype(np.uint32),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
        }
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def _write_uv_obj(path: Path, faces: np.ndarray, vt: np.ndarray, ft: np.ndarray) -> None:
    lines = [f"vt {u:.6f} {v:.6f}" for u, v in vt]
    lines += [
        f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
        for (a, b, c), (ta, tb, tc) in zip(faces, ft, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_a_chumpy_era_smpl_pickle_loads_without_chumpy(body_settings: Settings, tmp_path: Path) -> None:
    free = load_body_model("free", "female", body_settings)
    with np.load(free.path, allow_pickle=False) as data:
        arrays = dict(data)
    smpl_dir = tmp_path / "smpl"
    (smpl_dir / "models").mkdir(parents=True)
    _write_chumpy_style_pickle(smpl_dir / "models" / "basicModel_f_lbs_10_207_0_v1.0.0.pkl", arrays)
    _write_uv_obj(smpl_dir / "smpl_uv.obj", arrays["f"], arrays["vt"], arrays["ft"])
    assert "chumpy" not in sys.modules

    model = load_body_model("smpl", "female", Settings(smpl_dir=smpl_dir, cache_dir=tmp_path / "cache"))
    assert model.kind == "smpl" and model.num_vertices == free.num_vertices
    np.testing.assert_array_equal(model.ft, free.ft)
    np.testing.assert_allclose(model.vt, free.vt, atol=1e-6)
    assert set(np.unique(model.part_labels)) <= set(range(1, 25))
    rng = np.random.default_rng(5)
    poses, betas, trans = rng.normal(0, 0.3, (3, 72)), rng.normal(0, 1, 10), rng.normal(0, 1, (3, 3))
    np.testing.assert_allclose(
        model.evaluate(poses, betas, trans).vertices, free.evaluate(poses, betas, trans).vertices, atol=1e-5
    )


# --- motion files drive the body ------------------------------------------------------------------------


def test_surreal_and_amass_files_drive_the_free_body(body_settings: Settings, tmp_path: Path) -> None:
    from farm.assets.motion import load_sequence_motion
    from farm.core.spec import MotionRef

    rng = np.random.default_rng(11)
    frames = 480  # 4 s at 120 Hz
    t = np.arange(frames) / 120.0
    poses = np.zeros((frames, 72), np.float32)
    poses[:, 3 * 1] = 0.5 * np.sin(2 * np.pi * t)  # hips swing like a walk
    poses[:, 3 * 2] = -0.5 * np.sin(2 * np.pi * t)
    poses[:, 3 * 4] = 0.6 * (1 + np.sin(2 * np.pi * t)) / 2
    poses[:, 3:66] += rng.normal(0, 0.02, (frames, 63)).astype(np.float32)
    trans = np.stack([np.zeros(frames), np.full(frames, 0.9), 1.2 * t], axis=1).astype(np.float32)
    surreal = tmp_path / "smpl_data.npz"
    np.savez(surreal, pose_01_01=poses, trans_01_01=trans, femaleshapes=rng.normal(0, 1, (5, 10)))
    amass = tmp_path / "01_01_poses.npz"
    smplh = np.concatenate([poses[:, :66], rng.normal(0, 0.1, (frames, 90)).astype(np.float32)], axis=1)
    np.savez(amass, poses=smplh, trans=trans, betas=np.zeros(16), gender="female", mocap_framerate=120.0)

    model = load_body_model("free", "female", body_settings)
    betas = load_free_shape_bank("female", "train", body_settings)[0]
    results = []
    for ref in (
        MotionRef(uri=str(surreal), pose_key="pose_01_01", trans_key="trans_01_01", rate=120, frames=frames),
        MotionRef(uri=str(amass), pose_key="poses", trans_key="trans", rate=120, frames=frames),
    ):
        p, tr = load_sequence_motion(ref)
        clip = model.evaluate(p[::4][:100], betas, tr[::4][:100])  # SURREAL's 30 fps clip
        assert clip.vertices.shape == (100, model.num_vertices, 3) and np.isfinite(clip.vertices).all()
        results.append(clip)
    # The body part of both files is the same motion, so the bodies agree (SMPL-H hands are dropped).
    np.testing.assert_allclose(results[0].vertices, results[1].vertices, atol=1e-5)
    # The root translation carries the body forward along +z.
    assert results[0].joints[-1, 0, 2] - results[0].joints[0, 0, 2] > 3.0


# --- textures and the preview ----------------------------------------------------------------------------


def test_builtin_texture_pools_are_disjoint_and_deterministic(body_settings: Settings) -> None:
    from farm.assets.textures import BUILTIN_TEXTURES_PER_GENDER, builtin_texture_uris, load_texture

    for gender in ("female", "male"):
        train, test = builtin_texture_uris(gender, "train"), builtin_texture_uris(gender, "test")
        assert (len(train), len(test)) == (
            BUILTIN_TEXTURES_PER_GENDER["train"],
            BUILTIN_TEXTURES_PER_GENDER["test"],
        )
        assert not set(train) & set(test)
    uri = builtin_texture_uris("female", "train")[17]
    first = load_texture(uri, settings=body_settings)
    assert first.shape == (512, 512, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, load_texture(uri, settings=body_settings))
    other = load_texture(builtin_texture_uris("male", "test")[17], settings=body_settings)
    assert np.abs(first.astype(int) - other).mean() > 5
    with pytest.raises(FarmError, match="unknown built-in texture"):
        load_texture("builtin:texture/female/test/0050", settings=body_settings)


def test_texture_regions_follow_the_part_labels(body_settings: Settings) -> None:
    from farm.assets.textures import HAIR, SHOE, SKIN, TOP, TROUSERS, uv_layout

    layout = uv_layout(512, str(body_settings.cache_dir))
    assert layout.covered.mean() > 0.5
    model = load_body_model("free", "neutral", body_settings)
    # The texel at each face's UV centre lies in the zone of that face's part label.
    uv = model.vt[model.ft].mean(axis=1)
    rows = np.clip(((1 - uv[:, 1]) * 512).astype(int), 0, 511)
    cols = np.clip((uv[:, 0] * 512).astype(int), 0, 511)
    zone = layout.zone[rows, cols]
    labels = model.part_labels[model.faces]
    same = (labels[:, 0] == labels[:, 1]) & (labels[:, 1] == labels[:, 2])
    feet = same & np.isin(labels[:, 0], (8, 9, 11, 12))
    hands = same & np.isin(labels[:, 0], (21, 22, 23, 24))
    belly = same & (labels[:, 0] == 4)
    hips = same & (labels[:, 0] == 1)
    assert (zone[feet] == SHOE).mean() > 0.95 and (zone[hands] == SKIN).mean() > 0.95
    assert (zone[belly] == TOP).mean() > 0.95 and (zone[hips] == TROUSERS).mean() > 0.95
    assert (zone[same & (labels[:, 0] == 16)] == HAIR).mean() > 0.03  # the scalp: few, large faces


def test_user_texture_files_are_read_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    import farm.assets.textures as textures

    image = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "cloth.png")
    np.testing.assert_array_equal(textures.load_texture(str(tmp_path / "cloth.png")), image)
    assert textures.load_texture(f"file://{tmp_path / 'cloth.png'}").shape == (64, 48, 3)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(FarmError, match="broken.jpg"):
        textures.load_texture(str(tmp_path / "broken.jpg"))
    with pytest.raises(FarmError, match="does not exist"):
        textures.load_texture(str(tmp_path / "missing.png"))
    monkeypatch.setattr(textures, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(FarmError, match="scale it down"):
        textures.load_texture(str(tmp_path / "cloth.png"))


def test_preview_writes_a_contact_sheet(body_settings: Settings, tmp_path: Path) -> None:
    from PIL import Image

    from farm.assets.preview import PANEL, body_sheet

    path = body_sheet(tmp_path / "sheet.png", body_settings)
    with Image.open(path) as img:
        assert img.size == (6 * PANEL, 3 * PANEL)
        pixels = np.asarray(img.convert("RGB"))
    assert (np.abs(pixels.astype(int) - [245, 245, 240]).sum(axis=2) > 30).mean() > 0.1  # bodies, not blank
