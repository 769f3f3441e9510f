"""The body model in SMPL's parameterisation, evaluated with smplx (CPU torch), a whole clip per call.

    model = load_body_model("free", "female")           # or "smpl" with FARM_SMPL_DIR set
    frames = model.evaluate(poses, betas, trans)        # poses (T,72), betas (10,), trans (T,3)
    frames.vertices  # (T,V,3) float32, metres, Y up, the body faces +Z at zero pose (SMPL's frame)
    frames.joints    # (T,24,3) float32, the 24 SMPL joints in SMPL order
    model.faces (F,3) int64, model.vt (Nvt,2) float32 and model.ft (F,3) int64 (UVs, v up, SMPL style),
    model.part_labels (V,) uint8 in 1..24 (segmentation value = SMPL joint index + 1)

`kind="free"` is the anny-based body of `farm.assets.free_body` (built once into settings.cache_dir). `kind="smpl"` reads
the licensed SMPL files a user points FARM_SMPL_DIR at: the `.pkl` of every public release (the old ones hold
chumpy objects; they are read by the restricted unpickler of farm.assets.smpl_pickle, without chumpy)
or `.npz`. Both become one SMPL-format npz that `smplx.SMPL` is built from, so both run the same code.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from farm.assets.smpl_pickle import SMPL_URL, read_smpl_pickle
from farm.core.errors import FarmError
from farm.core.files import sha256_file
from farm.core.settings import Settings, get_settings
from farm.core.skeleton import NUM_JOINTS

BodyKind = Literal["free", "smpl"]
BodyGender = Literal["female", "male", "neutral"]
NUM_BETAS = 10
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")

# What users have on disk, per gender, in the order we look for them.
SMPL_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "female": (
        "SMPL_FEMALE.npz",
        "SMPL_FEMALE.pkl",
        "basicmodel_f_lbs_10_207_0_v1.1.0.pkl",
        "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
    ),
    "male": (
        "SMPL_MALE.npz",
        "SMPL_MALE.pkl",
        "basicmodel_m_lbs_10_207_0_v1.1.0.pkl",
        "basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
    ),
    "neutral": (
        "SMPL_NEUTRAL.npz",
        "SMPL_NEUTRAL.pkl",
        "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
        "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
    ),
}
SMPL_SUBDIRS = (".", "models", "smpl", "smpl/models", "SMPL_python_v.1.1.0/smpl/models")
SMPL_UV_FILE_NAMES = ("smpl_uv.obj", "SMPL_UV.obj", "smpl_uv_20200910/smpl_uv.obj")


@dataclass(frozen=True)
class BodyFrames:
    vertices: np.ndarray  # (T,V,3) float32
    joints: np.ndarray  # (T,24,3) float32


class BodyModel:
    """One gender of one body model; `evaluate` poses a whole clip in one smplx forward pass."""

    def __init__(self, kind: str, gender: str, path: Path) -> None:
        import smplx
        import torch

        arrays = read_model_npz(path)
        self.kind = kind
        self.gender = gender
        self.path = Path(path)
        self.faces: np.ndarray = arrays["f"].astype(np.int64)
        self.vt: np.ndarray = arrays["vt"].astype(np.float32)
        self.ft: np.ndarray = arrays["ft"].astype(np.int64)
        self.part_labels: np.ndarray = arrays["part_labels"].astype(np.uint8)
        self.num_vertices: int = int(arrays["v_template"].shape[0])
        self.parents: np.ndarray = arrays["kintree_table"][0].astype(np.int64)
        self.parents[0] = -1
        # smplx prints a note about 10-component models on stdout; it is expected here.
        with contextlib.redirect_stdout(io.StringIO()):
            self._smpl = smplx.SMPL(
                model_path=str(path),
                data_struct=smplx.utils.Struct(**arrays),
                num_betas=NUM_BETAS,
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                dtype=torch.float32,
            )
        self._smpl.eval()

    def evaluate(self, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> BodyFrames:
        """Vertices and joints for every frame: poses (T,72) axis-angle, betas (<=10,), trans (T,3) metres."""
        import torch

        poses = np.asarray(poses, dtype=np.float32)
        trans = np.asarray(trans, dtype=np.float32)
        betas = np.asarray(betas, dtype=np.float32).reshape(-1)
        if poses.ndim != 2 or poses.shape[1] != 3 * NUM_JOINTS:
            raise ValueError(f"poses must be (T, 72), got {poses.shape}")
        if trans.shape != (len(poses), 3):
            raise ValueError(f"trans must be ({len(poses)}, 3), got {trans.shape}")
        if len(betas) > NUM_BETAS:
            raise ValueError(f"at most {NUM_BETAS} betas, got {len(betas)}")
        betas = np.pad(betas, (0, NUM_BETAS - len(betas)))
        with torch.no_grad():
            p = torch.from_numpy(poses)
            out = self._smpl(
                betas=torch.from_numpy(betas)[None],
                global_orient=p[:, :3],
                body_pose=p[:, 3:],
                transl=torch.from_numpy(trans),
            )
        return BodyFrames(
            vertices=out.vertices.numpy().astype(np.float32, copy=False),
            joints=out.joints[:, :NUM_JOINTS].numpy().astype(np.float32, copy=False),
        )


def load_body_model(kind: str, gender: str, settings: Settings | None = None) -> BodyModel:
    """The body model `kind` ("free" or "smpl") for `gender` ("female", "male", "neutral"), cached per process."""
    settings = settings or get_settings()
    if kind not in ("free", "smpl"):
        raise FarmError(f"unknown body model {kind!r}: use 'free' or 'smpl' (FARM_BODY_MODEL)")
    if gender not in SMPL_FILE_NAMES:
        raise FarmError(f"unknown body gender {gender!r}: use female, male or neutral")
    smpl_dir = str(settings.smpl_dir) if settings.smpl_dir else ""
    return _load_cached(kind, gender, smpl_dir, str(settings.cache_dir))


@lru_cache(maxsize=8)
def _load_cached(kind: str, gender: str, smpl_dir: str, cache_dir: str) -> BodyModel:
    if kind == "free":
        from farm.assets.free_body import ensure_free_body

        path = ensure_free_body(gender, Path(cache_dir))
    else:
        path = prepare_smpl_model(gender, Path(smpl_dir) if smpl_dir else None, Path(cache_dir))
    return BodyModel(kind, gender, path)


def load_free_shape_bank(gender: str, split: str, settings: Settings | None = None) -> np.ndarray:
    """(N,10) betas of sampled free bodies for the sampler: the first 80% are train, the last 20% test."""
    from farm.assets.free_body import TRAIN_FRACTION, ensure_free_body

    settings = settings or get_settings()
    with np.load(ensure_free_body(gender, settings.cache_dir), allow_pickle=False) as data:
        bank = data["shape_bank"]
    cut = int(round(TRAIN_FRACTION * len(bank)))
    if split == "train":
        return bank[:cut]
    if split == "test":
        return bank[cut:]
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# --- reading model files -------------------------------------------------------------------------------


def read_model_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a SMPL-format npz with everything `BodyModel` needs (UVs and part labels included)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (*REQUIRED_KEYS, "vt", "ft", "part_labels") if k not in data.files]
            if missing:
                raise FarmError(
                    f"the body model file {path} lacks {', '.join(missing)}: rebuild or re-import it"
                )
            return {k: data[k] for k in (*REQUIRED_KEYS, "vt", "ft", "part_labels")}
    except (OSError, ValueError) as exc:
        raise FarmError(f"cannot read the body model file {path} ({exc}): rebuild or re-import it") from exc


def read_smpl_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files if k in (*REQUIRED_KEYS, "vt", "ft", "part_labels")}
        except ValueError as exc:
            raise FarmError(
                f"the SMPL file {path} holds objects, not plain arrays ({exc}): refusing it"
            ) from exc
    return read_smpl_pickle(path)


def find_smpl_file(gender: str, smpl_dir: Path | None) -> Path:
    names = SMPL_FILE_NAMES[gender]
    hint = f"download SMPL from {SMPL_URL} and set FARM_SMPL_DIR to the folder holding it"
    if smpl_dir is None:
        raise FarmError(
            f"no SMPL folder is set for the {gender} SMPL body (expected {names[0]} or {names[2]}): {hint}"
        )
    for sub in SMPL_SUBDIRS:
        for name in names:
            candidate = Path(smpl_dir) / sub / name
            if candidate.is_file():
                return candidate
    raise FarmError(f"no {gender} SMPL model in {smpl_dir} (expected one of {', '.join(names)}): {hint}")


def read_obj_uvs(path: Path, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vt, ft) from an OBJ with 'f v/vt ...' triangles over the same vertices as `faces` (SMPL's UV map)."""
    vt: list[list[float]] = []
    by_face: dict[tuple[int, int, int], list[int]] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "vt":
            vt.append([float(parts[1]), float(parts[2])])
        elif parts[0] == "f" and len(parts) == 4:
            corners = [p.split("/") for p in parts[1:]]
            if any(len(c) < 2 or not c[1] for c in corners):
                raise FarmError(
                    f"the UV file {path} has faces without texture coordinates: use SMPL's smpl_uv.obj"
                )
            key = (int(corners[0][0]) - 1, int(corners[1][0]) - 1, int(corners[2][0]) - 1)
            by_face[key] = [int(c[1]) - 1 for c in corners]
    ft = []
    for face in faces:
        uv = by_face.get((int(face[0]), int(face[1]), int(face[2])))
        if uv is None:
            raise FarmError(f"the UV file {path} does not match the SMPL mesh: use SMPL's smpl_uv.obj")
        ft.append(uv)
    return np.asarray(vt, dtype=np.float32), np.asarray(ft, dtype=np.int64)


def smpl_arrays(raw: dict[str, Any], path: Path, uv_dirs: tuple[Path, ...] = ()) -> dict[str, np.ndarray]:
    """SMPL-format arrays (dense, 10 betas) plus UVs and part labels from one SMPL file's contents."""
    import scipy.sparse

    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise FarmError(f"the SMPL file {path} lacks {', '.join(missing)}: use an official SMPL model file")
    jreg = raw["J_regressor"]
    jreg = jreg.toarray() if scipy.sparse.issparse(jreg) else np.asarray(jreg)
    out = {
        "v_template": np.asarray(raw["v_template"], dtype=np.float64),
        "f": np.asarray(raw["f"], dtype=np.int64),
        "shapedirs": np.asarray(raw["shapedirs"], dtype=np.float64)[:, :, :NUM_BETAS],
        "posedirs": np.asarray(raw["posedirs"], dtype=np.float64),
        "J_regressor": jreg.astype(np.float64),
        "weights": np.asarray(raw["weights"], dtype=np.float64),
        "kintree_table": np.asarray(raw["kintree_table"]).astype(np.int64),
    }
    if out["J_regressor"].shape[0] != NUM_JOINTS or out["weights"].shape[1] != NUM_JOINTS:
        raise FarmError(f"the file {path} is not a 24-joint SMPL body (SMPL-H/SMPL-X are not supported here)")
    # Segmentation: each vertex belongs to the joint that moves it most.
    out["part_labels"] = (np.argmax(out["weights"], axis=1) + 1).astype(np.uint8)
    if "vt" in raw and "ft" in raw:
        out["vt"], out["ft"] = np.asarray(raw["vt"], np.float32), np.asarray(raw["ft"], np.int64)
    else:
        found = [Path(d) / n for d in uv_dirs for n in SMPL_UV_FILE_NAMES if (Path(d) / n).is_file()]
        uv_file = found[0] if found else None
        if uv_file is None:
            raise FarmError(
                f"no UV map for the SMPL body next to {path} (expected {SMPL_UV_FILE_NAMES[0]}): download SMPL's "
                f"UV map from {SMPL_URL} into FARM_SMPL_DIR"
            )
        out["vt"], out["ft"] = read_obj_uvs(uv_file, out["f"])
    return out


def prepare_smpl_model(gender: str, smpl_dir: Path | None, cache_dir: Path) -> Path:
    """Convert the user's SMPL file for `gender` once into a SMPL-format npz in the cache; returns its path."""
    from farm.assets.free_body import model_file_name, write_npz

    source = find_smpl_file(gender, smpl_dir)
    digest = sha256_file(source)[:16]
    target = Path(cache_dir) / "smpl" / digest / model_file_name(gender)
    if not target.exists():
        uv_dirs = (source.parent, Path(smpl_dir)) if smpl_dir else (source.parent,)
        write_npz(target, smpl_arrays(read_smpl_file(source), source, uv_dirs))
    return target
