"""The free default body: an SMPL-compatible model built from the `anny` package (Apache-2.0, MakeHuman data).

`build_free_bodies(out_dir)` writes `SMPL_FEMALE.npz`, `SMPL_MALE.npz` and `SMPL_NEUTRAL.npz` with SMPL's array
names, so the same code that loads a licensed SMPL file (and `smplx.SMPL`) loads them:

- `v_template` (V,3), `f` (F,3), `J_regressor` (24,V), `weights` (V,24), `kintree_table` (2,24),
  `shapedirs` (V,3,10), `posedirs` (V,3,207): zeros, this body has no pose-corrective blend shapes;
- plus `vt` (Nvt,2), `ft` (F,3) (MakeHuman's UV layout), `part_labels` (V,) uint8 in 1..24,
  `shape_bank` (N,10) betas of the sampled bodies (first 80% train, last 20% test),
  `explained_variance` (10,) the cumulative share of the sampled bodies' variance, and `build_info` (JSON).

Frame and rest pose as SMPL: Y up, the body faces +Z, its left side is +X, metres, a T-pose with straight arms
along +-X and legs straight down; the pelvis joint of the mean body sits at `PELVIS_REST`, near SMPL's.

How it is built: anny bodies are sampled from anny's calibrated phenotype distributions (adults of 18-75 years,
varied height, weight, muscle and proportions) with a fixed-seed numpy Generator; each is posed into the T-pose
(arms and legs straightened by minimal rotations at shoulder, elbow, wrist and hip); the 24 SMPL joints are anny
bone heads; each anny bone's skinning weight goes to the SMPL joint whose segment it lies in; the joint regressor
is fitted (least squares, rows summing to one) so that it reproduces the joints of every sampled body from nearby
vertices; ten principal components of the sampled bodies, scaled to unit variance, are the shape space.
Everything is deterministic: rebuilding gives byte-identical files (fixed zip timestamps).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from farm.core.errors import FarmError
from farm.core.files import atomic_write
from farm.core.seeding import keyed_rng
from farm.core.skeleton import NUM_JOINTS, PARENTS

FREE_BODY_VERSION = 3  # 3: a component's sign no longer depends on the CPU
GENDERS = ("female", "male", "neutral")
SAMPLES_PER_GENDER = 600
TRAIN_FRACTION = 0.8  # the first 80% of each shape bank is train, the rest test (as SURREAL's CAESAR banks)
NUM_BETAS = 10
PELVIS_REST = np.array([0.0, -0.22, 0.03])  # the mean body's pelvis joint, near SMPL's template
ADULT_AGE_YEARS = (18.0, 75.0)
ANNY_TOPOLOGY = (
    "anny-noeyes-notongue"  # eyes and tongue are separate meshes; a single connected skin is simpler
)
SEEDS = {"female": 1001, "male": 1002, "neutral": 1003}  # one fixed named seed per gender


def model_file_name(gender: str) -> str:
    return f"SMPL_{gender.upper()}.npz"


SHIPPED_SHAPE_BANKS = "data/free_shape_banks.npz"  # package data of farm.assets


def shipped_shape_bank(gender: str) -> np.ndarray:
    """The free body's bank of betas (N,10) as shipped with the farm: what build_free_bodies writes as
    `shape_bank` (a test checks it), so planning clips needs neither torch nor anny."""
    from importlib import resources

    if gender not in GENDERS:
        raise FarmError(f"unknown body gender {gender!r}: use one of {', '.join(GENDERS)}")
    with resources.files("farm.assets").joinpath(SHIPPED_SHAPE_BANKS).open("rb") as f, np.load(f) as data:
        return np.asarray(data[gender])


def _anny_version() -> str:
    return importlib.metadata.version("anny")


def cache_key() -> str:
    """Changes whenever the build would give different files: our version, anny's version, the sampling."""
    text = json.dumps(
        [FREE_BODY_VERSION, _anny_version(), SAMPLES_PER_GENDER, SEEDS, ANNY_TOPOLOGY, list(PELVIS_REST)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def free_body_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "free-body" / f"v{FREE_BODY_VERSION}-{cache_key()}"


def ensure_free_body(gender: str, cache_dir: Path) -> Path:
    """The path of the cached free body file for `gender`, building all three genders first if needed."""
    if gender not in GENDERS:
        raise FarmError(f"unknown body gender {gender!r}: use one of {', '.join(GENDERS)}")
    path = free_body_dir(cache_dir) / model_file_name(gender)
    if not path.exists():
        build_free_bodies(path.parent)
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz that np.load reads, byte-identical for identical arrays (fixed zip timestamps), written atomically."""
    with (
        atomic_write(Path(path), durable=False) as f,
        zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf,
    ):
        for name in sorted(arrays):
            buf = io.BytesIO()
            array = np.asarray(arrays[name])  # (ascontiguousarray would turn a 0-d string into 1-d)
            np.lib.format.write_array(
                buf, array if array.flags.c_contiguous else array.copy(), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


# --- anny -> SMPL correspondence -------------------------------------------------------------------------


def bone_to_joint(label: str) -> int:
    """The SMPL joint whose rotation drives an anny bone (the segment the bone lies in)."""
    side = label.rsplit(".", 1)[1] if label.endswith((".L", ".R")) else ""
    left = side == "L"

    def lr(left_joint: int) -> int:
        return left_joint if left else left_joint + 1

    base = label.split(".")[0]
    if base in ("root", "pelvis", "spine05", "spine04"):
        return 0
    if base == "spine03":
        return 3
    if base == "spine02":
        return 6
    if base == "spine01":
        return 9
    if base.startswith("neck"):
        return 12
    if base in ("head", "eye", "jaw"):
        return 15
    if base.startswith("upperleg"):
        return lr(1)
    if base.startswith("lowerleg"):
        return lr(4)
    if base == "foot":
        return lr(7)
    if base.startswith("toe"):
        return lr(10)
    if base in ("clavicle", "shoulder01"):
        return lr(13)
    if base.startswith("upperarm"):
        return lr(16)
    if base.startswith("lowerarm"):
        return lr(18)
    if base == "wrist" or base.startswith("metacarpal"):
        return lr(20)
    if base.startswith("finger"):
        return lr(22)
    raise ValueError(f"anny bone {label!r} has no SMPL joint: extend bone_to_joint")


def _joint_positions(heads: np.ndarray, labels: list[str]) -> np.ndarray:
    """(B,24,3) SMPL joints from (B,K,3) anny bone heads."""
    ix = {name: i for i, name in enumerate(labels)}

    def at(*names: str) -> np.ndarray:
        return heads[:, [ix[n] for n in names]].mean(axis=1)

    table: list[np.ndarray] = [at("root")]
    for s in ("L", "R"):
        table.append(at(f"upperleg01.{s}"))
    table.append(at("spine03"))
    for s in ("L", "R"):
        table.append(at(f"lowerleg01.{s}"))
    table.append(at("spine02"))
    for s in ("L", "R"):
        table.append(at(f"foot.{s}"))
    table.append(at("spine01"))
    for s in ("L", "R"):  # the ball of the foot: the toes' base joints
        table.append(at(*(f"toe{t}-1.{s}" for t in range(1, 6))))
    table.append(at("neck01"))
    for s in ("L", "R"):  # between the clavicle's root and the shoulder's top, as SMPL's collar
        table.append(at(f"clavicle.{s}", f"shoulder01.{s}"))
    table.append(at("head"))
    for s in ("L", "R"):
        table.append(at(f"upperarm01.{s}"))
    for s in ("L", "R"):
        table.append(at(f"lowerarm01.{s}"))
    for s in ("L", "R"):
        table.append(at(f"wrist.{s}"))
    for s in ("L", "R"):  # the knuckles
        table.append(at(*(f"finger{t}-1.{s}" for t in range(2, 6))))
    return np.stack(table, axis=1)


# --- geometry helpers --------------------------------------------------------------------------------------


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,3,3) minimal rotations taking directions a (B,3) onto b (B,3)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1)
    c = np.sum(a * b, axis=-1)
    k = axis / np.maximum(s, 1e-12)[:, None]
    kx = np.zeros((len(a), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - kx.transpose(0, 2, 1)
    angle = np.arctan2(s, c)
    eye = np.broadcast_to(np.eye(3), kx.shape)
    return eye + np.sin(angle)[:, None, None] * kx + (1 - np.cos(angle))[:, None, None] * (kx @ kx)


def _apply(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("bij,bj->bi", r, v)


def _tpose_deltas(heads: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """Rotations (anny 'local-ref' deltas, world-aligned axes) that straighten arms along +-X and legs downward.

    A child's delta D acts before its parent's world rotation P, so a wanted extra world rotation R becomes
    D = P^T R P.
    """
    ix = {name: i for i, name in enumerate(labels)}

    def h(name: str) -> np.ndarray:
        return heads[:, ix[name]]

    deltas: dict[str, np.ndarray] = {}
    for s, sign in (("L", 1.0), ("R", -1.0)):
        out = np.zeros_like(h("root"))
        out[:, 0] = sign
        shoulder, elbow, wrist = h(f"upperarm01.{s}"), h(f"lowerarm01.{s}"), h(f"wrist.{s}")
        knuckles = np.mean([h(f"finger{t}-1.{s}") for t in range(2, 6)], axis=0)
        r1 = _rotation_between(elbow - shoulder, out)
        deltas[f"upperarm01.{s}"] = r1
        r2 = _rotation_between(_apply(r1, wrist - elbow), out)
        deltas[f"lowerarm01.{s}"] = r1.transpose(0, 2, 1) @ r2 @ r1
        p = r2 @ r1
        r3 = _rotation_between(_apply(p, knuckles - wrist), out)
        deltas[f"wrist.{s}"] = p.transpose(0, 2, 1) @ r3 @ p
        # Legs: remove the sideways slope hip -> ankle, keep the foot's sole as it was.
        hip, ankle = h(f"upperleg01.{s}"), h(f"foot.{s}")
        down = ankle - hip
        down[:, 0] = 0.0
        r_leg = _rotation_between(ankle - hip, down)
        deltas[f"upperleg01.{s}"] = r_leg
        deltas[f"foot.{s}"] = r_leg.transpose(0, 2, 1)
    return deltas


# anny is Z up, its front is -Y, its left +X; SMPL is Y up, front +Z, left +X.
_ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


# --- sampling ---------------------------------------------------------------------------------------------


def sample_phenotypes(model: Any, gender: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, P) anny phenotype values of adults, in the order of `model.phenotype_labels`.

    Ages uniform over ADULT_AGE_YEARS; height, weight, muscle and proportions from anny's calibrated Beta
    distributions for that age, drawn with `rng` (anny's own sampler uses torch's global generator).
    """
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    dist = SimpleShapeDistribution(model)
    years = rng.uniform(*ADULT_AGE_YEARS, size=n)
    age = dist.morphological_age_mapping.morphological_to_anny_age(
        torch.as_tensor(years, dtype=torch.float64)
    )
    if gender == "female":
        sex = np.ones(n)
    elif gender == "male":
        sex = np.zeros(n)
    else:
        sex = rng.uniform(0.0, 1.0, size=n)
    values = {"gender": sex, "age": age.numpy()}
    for name in ("height", "weight", "muscle", "proportions"):
        draws = []
        for group in ("boys", "girls"):
            a, b = getattr(dist, f"{group}_conditional_{name}_distribution").get_distribution_params(age)
            draws.append(rng.beta(a.numpy(), b.numpy()))
        values[name] = np.where(sex <= 0.5, draws[0], draws[1])  # anny: gender 0 is male, 1 female
    return np.stack([values[label] for label in model.phenotype_labels], axis=1)


def load_anny() -> Any:
    import anny

    # Plain LBS: anny's default warp kernels take seconds to compile and give the same result.
    return anny.Anny(topology=ANNY_TOPOLOGY, skinning_method="lbs")


def pose_tpose(model: Any, phenotypes: np.ndarray, chunk: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N,V,3) and SMPL joints (N,24,3) of anny bodies in the T-pose, in anny's frame."""
    import torch

    labels = list(model.bone_labels)
    verts, joints = [], []
    with torch.no_grad():
        for start in range(0, len(phenotypes), chunk):
            phen = torch.as_tensor(phenotypes[start : start + chunk], dtype=torch.float64)
            b = len(phen)
            rest = model(pose_parameters=None, phenotype_kwargs=phen)
            heads = rest["rest_bone_heads"].numpy()
            deltas = torch.eye(4, dtype=torch.float64).repeat(b, len(labels), 1, 1)
            deltas[:, 0] = rest["rest_bone_poses"][:, 0]  # 'local-ref' root delta is its world pose: keep it
            for name, rot in _tpose_deltas(heads, labels).items():
                deltas[:, labels.index(name), :3, :3] = torch.as_tensor(rot)
            out = model(pose_parameters=deltas, phenotype_kwargs=phen)
            verts.append(out["vertices"].numpy())
            joints.append(_joint_positions(out["bone_poses"][:, :, :3, 3].numpy(), labels))
    return np.concatenate(verts), np.concatenate(joints)


# --- fitting ----------------------------------------------------------------------------------------------


def fit_joint_regressor(
    verts: np.ndarray, joints: np.ndarray, k: int = 64, ridge: float = 1e-3
) -> tuple[np.ndarray, float]:
    """(24,V) rows summing to one that map every sampled body's vertices to its joints; and the RMS error (m).

    Each joint uses its k nearest vertices on the mean body; the least-squares fit over all samples is pulled
    towards equal weights by a small ridge so that it stays smooth.
    """
    n, v, _ = verts.shape
    mean = verts.mean(axis=0)
    regressor = np.zeros((joints.shape[1], v))
    sq_err = []
    for j in range(joints.shape[1]):
        cand = np.argsort(np.linalg.norm(mean - joints[:, j].mean(axis=0), axis=1), kind="stable")[:k]
        a = verts[:, cand, :].transpose(0, 2, 1).reshape(n * 3, k)  # rows: (sample, coord)
        b = joints[:, j, :].reshape(n * 3)
        scale = np.trace(a.T @ a) / k
        w0 = np.full(k, 1.0 / k)
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k] = a.T @ a + ridge * scale * np.eye(k)
        kkt[:k, k] = kkt[k, :k] = 1.0
        rhs = np.concatenate([a.T @ b + ridge * scale * w0, [1.0]])
        w = np.linalg.solve(kkt, rhs)[:k]
        regressor[j, cand] = w
        sq_err.append(np.mean((a @ w - b) ** 2))
    return regressor, float(np.sqrt(np.mean(sq_err)) * np.sqrt(3))


def principal_shapes(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V,3), shapedirs (V,3,10) with unit-variance betas, the samples' betas (N,10), cumulative share."""
    n = len(verts)
    x = verts.reshape(n, -1)
    mean = x.mean(axis=0)
    xc = x - mean
    evals, evecs = np.linalg.eigh(xc @ xc.T)  # the N x N Gram matrix: N << 3V
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    comps = (xc.T @ evecs[:, :NUM_BETAS]) / np.sqrt(evals[:NUM_BETAS])  # (3V,10) unit vectors
    # A stable sign: each component leans positive on a fixed ramp over the coordinates. ("Its largest entry
    # is positive" was not stable: a symmetric body's largest entries tie exactly, left against right, and the
    # machine's arithmetic picked which one, flipping a component between CPUs. The ramp's dot product with
    # every component is at least 0.17 for these bodies, far above rounding.)
    ramp = np.linspace(-1.0, 1.0, len(comps)) + 0.5
    signs = np.sign(ramp @ comps)
    comps = comps * signs
    std = np.sqrt(evals[:NUM_BETAS] / (n - 1))
    shapedirs = (comps * std).reshape(-1, 3, NUM_BETAS)
    betas = (xc @ comps) / std
    cumulative = np.cumsum(evals[:NUM_BETAS]) / evals.sum()
    return mean.reshape(-1, 3), shapedirs, betas, cumulative


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E,2) undirected edges of a triangle mesh, each once."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.sort(e, axis=1)
    return np.unique(e, axis=0)


def clean_part_labels(labels: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Make each label one connected region: islands apart from a label's largest region join a neighbour label."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    labels = labels.copy()
    edges = mesh_edges(faces)
    v = len(labels)
    for _ in range(20):
        same = labels[edges[:, 0]] == labels[edges[:, 1]]
        e = edges[same]
        graph = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(v, v))
        _, comp = connected_components(graph, directed=False)
        sizes = np.bincount(comp)
        # The main region of each label is its largest component.
        main = np.zeros(v, dtype=bool)
        for lab in np.unique(labels):
            members = np.flatnonzero(labels == lab)
            biggest = members[np.argmax(sizes[comp[members]])]
            main |= comp == comp[biggest]
        if main.all():
            return labels
        # Each stray vertex takes the most common label among neighbours in a main region.
        cross = edges[~same]
        votes = np.zeros((v, 25))
        for a, b in ((cross[:, 0], cross[:, 1]), (cross[:, 1], cross[:, 0])):
            ok = main[b] & ~main[a]
            np.add.at(votes, (a[ok], labels[b[ok]]), 1.0)
        stray = np.flatnonzero(~main & (votes.sum(axis=1) > 0))
        labels[stray] = np.argmax(votes[stray], axis=1)
    raise RuntimeError("part labels did not settle into connected regions")


# --- the build --------------------------------------------------------------------------------------------


def _build_gender(model: Any, gender: str, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t0 = time.perf_counter()
    rng = keyed_rng(SEEDS[gender])
    phen = sample_phenotypes(model, gender, SAMPLES_PER_GENDER, rng)
    verts, joints = pose_tpose(model, phen)
    verts = verts @ _ANNY_TO_SMPL.T
    joints = joints @ _ANNY_TO_SMPL.T
    shift = PELVIS_REST - joints[:, 0].mean(axis=0)
    verts += shift
    joints += shift
    regressor, joint_rms = fit_joint_regressor(verts, joints)
    mean, shapedirs, betas, cumulative = principal_shapes(verts)
    f32 = np.float32
    arrays = dict(base)
    arrays.update(
        v_template=mean.astype(f32),
        shapedirs=shapedirs.astype(f32),
        posedirs=np.zeros((len(mean), 3, 207), dtype=f32),
        J_regressor=regressor.astype(f32),
        shape_bank=betas.astype(f32),
        explained_variance=cumulative.astype(f32),
    )
    info = {
        "generator": "surreal-farm free body",
        "version": FREE_BODY_VERSION,
        "anny_version": _anny_version(),
        "gender": gender,
        "samples": SAMPLES_PER_GENDER,
        "seed": SEEDS[gender],
        "explained_variance_10": round(float(cumulative[-1]), 6),
        "joint_regressor_rms_m": round(joint_rms, 6),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "posedirs": "zeros (no pose-corrective blend shapes)",
    }
    # build_seconds varies between runs, so it stays out of the file (identical hashes on rebuild).
    arrays["build_info"] = np.array(json.dumps({k: v for k, v in info.items() if k != "build_seconds"}))
    arrays["_stats"] = np.array(json.dumps(info))
    return arrays


def _shared_arrays(model: Any) -> dict[str, np.ndarray]:
    """What every gender shares: faces, UVs, skinning weights, part labels, the kinematic tree."""
    faces = model.faces.numpy().astype(np.int64)
    labels = list(model.bone_labels)
    to_joint = np.zeros((len(labels), NUM_JOINTS))
    for i, name in enumerate(labels):
        to_joint[i, bone_to_joint(name)] = 1.0
    v = model.template_vertices.shape[0]
    dense = np.zeros((v, len(labels)))
    idx = model.vertex_bone_indices.numpy()
    w = model.vertex_bone_weights.numpy()
    np.add.at(dense, (np.repeat(np.arange(v), idx.shape[1]), idx.ravel()), w.ravel())
    weights = dense @ to_joint
    weights /= weights.sum(axis=1, keepdims=True)
    part_labels = clean_part_labels(np.argmax(weights, axis=1), faces) + 1
    vt = model.texture_coordinates.numpy()
    ft = model.face_texture_coordinate_indices.numpy().astype(np.int64)
    kintree = np.stack([np.array(PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)
    return {
        "f": faces,
        "weights": weights.astype(np.float32),
        "part_labels": part_labels.astype(np.uint8),
        "vt": vt.astype(np.float32),
        "ft": ft,
        "kintree_table": kintree,
    }


def build_free_bodies(out_dir: Path, genders: tuple[str, ...] = GENDERS) -> dict[str, Path]:
    """Build the free bodies into `out_dir` (SMPL_<GENDER>.npz each); returns the written paths.

    Takes about a minute once anny's own cache (~/.cache/anny) exists; anny's first start builds that cache
    (a few minutes, once per machine).
    """
    model = load_anny()
    base = _shared_arrays(model)
    paths = {}
    for gender in genders:
        arrays = _build_gender(model, gender, base)
        stats = arrays.pop("_stats")
        path = Path(out_dir) / model_file_name(gender)
        write_npz(path, arrays)
        (Path(out_dir) / f"{path.stem}.stats.json").write_text(str(stats) + "\n")
        paths[gender] = path
    return paths
