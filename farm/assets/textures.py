"""Clothing textures: procedural ones in the free body's UV layout, and users' image files.

A built-in texture is named `builtin:texture/<gender>/<split>/<NNNN>` and generated from that name alone (its seed
is a stable hash of the uri, farm.core.seeding.text_seed): a skin tone, hair, a top (short or long sleeves), trousers
or shorts and shoes, each garment plain, striped, checked or noisy. Regions come from the body's part labels mapped into UV space, and
patterns are laid out on the 3D rest body, so stripes run around the body rather than across UV islands.
Images are (H,W,3) uint8 with row 0 at the top (v = 1), as image files are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from farm.assets.untrusted import open_image
from farm.core.errors import FarmError
from farm.core.seeding import keyed_rng, text_seed
from farm.core.settings import Settings, get_settings

BUILTIN_TEXTURES_PER_GENDER = {"train": 200, "test": 50}
TEXTURE_SIZE = 512
MAX_IMAGE_PIXELS = 8192 * 8192  # a texture file larger than this is refused rather than decoded
_URI = re.compile(r"builtin:texture/(female|male)/(train|test)/(\d{4})")

# Zones of the body a texture paints, from SMPL part labels (1..24).
SKIN, HAIR, TOP, SLEEVE, FOREARM, TROUSERS, SHIN, SHOE = range(8)
_LABEL_ZONE = {
    1: TROUSERS, 2: TROUSERS, 3: TROUSERS, 4: TOP, 5: SHIN, 6: SHIN, 7: TOP, 8: SHOE, 9: SHOE, 10: TOP,
    11: SHOE, 12: SHOE, 13: SKIN, 14: TOP, 15: TOP, 16: SKIN, 17: SLEEVE, 18: SLEEVE, 19: FOREARM,
    20: FOREARM, 21: SKIN, 22: SKIN, 23: SKIN, 24: SKIN,
}  # fmt: skip
_SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 128],
        [198, 140, 100],
        [160, 108, 72],
        [120, 78, 50],
        [86, 56, 38],
    ]
)
_HAIR_COLOURS = np.array(
    [[25, 20, 18], [60, 40, 28], [100, 70, 45], [170, 130, 80], [120, 60, 30], [150, 150, 150]]
)


def builtin_texture_uris(gender: str, split: str) -> list[str]:
    """The built-in texture pool of a gender and split (train and test are disjoint)."""
    if gender not in ("female", "male") or split not in BUILTIN_TEXTURES_PER_GENDER:
        raise ValueError(f"no built-in textures for gender {gender!r} and split {split!r}")
    return [f"builtin:texture/{gender}/{split}/{i:04d}" for i in range(BUILTIN_TEXTURES_PER_GENDER[split])]


def load_texture(uri: str, size: int = TEXTURE_SIZE, settings: Settings | None = None) -> np.ndarray:
    """The texture image (H,W,3) uint8 for a built-in uri or a JPG/PNG path ('file://' accepted).

    Built-in textures are `size` x `size` and need the free body (built into settings.cache_dir if missing).
    """
    if uri.startswith("builtin:"):
        match = _URI.fullmatch(uri)
        if not match or int(match[3]) >= BUILTIN_TEXTURES_PER_GENDER[match[2]]:
            raise FarmError(
                f"unknown built-in texture {uri!r}: use builtin:texture/<female|male>/<train|test>/<NNNN> "
                f"with NNNN below {BUILTIN_TEXTURES_PER_GENDER}"
            )
        cache_dir = str((settings or get_settings()).cache_dir)
        return _builtin_texture(uri, match[1], size, cache_dir).copy()
    from farm.core.storage import local_asset

    return read_image(Path(local_asset(uri, settings).removeprefix("file://")))


def read_image(path: Path) -> np.ndarray:
    """An image file as (H,W,3) uint8, refusing broken, foreign or huge files with a FarmError."""
    with open_image(path, "texture", MAX_IMAGE_PIXELS) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


# --- the UV layout ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UVLayout:
    """Per texel of the free body's UV map: its body zone and its point on the neutral rest body (metres)."""

    zone: np.ndarray  # (S,S) uint8
    position: np.ndarray  # (S,S,3) float32
    covered: np.ndarray  # (S,S) bool: inside some UV triangle


def _hair_mask(verts: np.ndarray, labels: np.ndarray, head_joint: np.ndarray) -> np.ndarray:
    """Scalp: head vertices above the brow, and behind the ears down to the nape."""
    rel = verts - head_joint
    head = labels == 16
    return head & ((rel[:, 1] > 0.1) | ((rel[:, 2] < -0.02) & (rel[:, 1] > -0.02)))


def build_uv_layout(
    verts: np.ndarray,
    faces: np.ndarray,
    vt: np.ndarray,
    ft: np.ndarray,
    labels: np.ndarray,
    head: np.ndarray,
    size: int,
) -> UVLayout:
    """Rasterise the UV triangles: each texel takes its triangle's zone and interpolated rest position."""
    from scipy import ndimage

    zones = np.array([_LABEL_ZONE[int(lab)] for lab in labels], dtype=np.uint8)
    zones[_hair_mask(verts, labels, head)] = HAIR
    face_zone = zones[faces]
    # A face's zone is its corners' majority (the first corner's on a three-way tie).
    fz = np.where(face_zone[:, 1] == face_zone[:, 2], face_zone[:, 1], face_zone[:, 0])
    px = np.stack([vt[:, 0] * size - 0.5, (1.0 - vt[:, 1]) * size - 0.5], axis=1)
    face_ix = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float32)
    tri = px[ft]  # (F,3,2)
    lo = np.clip(np.floor(tri.min(axis=1)).astype(int), 0, size - 1)
    hi = np.clip(np.ceil(tri.max(axis=1)).astype(int), 0, size - 1)
    extent = (hi - lo + 1).max(axis=1)
    # Triangles are small: test each one's bounding square of side `side` at once, bigger ones in later rounds.
    side = 1
    todo = np.arange(len(ft))
    while len(todo):
        side *= 2
        batch, todo = todo[extent[todo] <= side], todo[extent[todo] > side]
        for chunk in np.array_split(batch, max(1, len(batch) * side * side // 2_000_000)):
            _raster(tri[chunk], lo[chunk], chunk, side, size, face_ix, bary)
    covered = face_ix >= 0
    # Texels outside every triangle copy their nearest covered texel, so filtering at seams stays in colour.
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    face_ix, bary = face_ix[iy, ix], bary[iy, ix]
    position = np.einsum("hwk,hwkd->hwd", bary, verts[faces[face_ix]]).astype(np.float32)
    return UVLayout(zone=fz[face_ix], position=position, covered=covered)


def _raster(
    tri: np.ndarray,
    lo: np.ndarray,
    ids: np.ndarray,
    side: int,
    size: int,
    face_ix: np.ndarray,
    bary: np.ndarray,
) -> None:
    """Write the face index and barycentric coordinates of every texel centre inside the triangles `tri`."""
    off = np.stack(np.meshgrid(np.arange(side), np.arange(side)), axis=-1).reshape(-1, 2)
    pix = lo[:, None, :] + off[None]  # (n, side*side, 2) as (x, y)
    a, b, c = (tri[:, k, None, :] for k in range(3))
    den = (b[..., 1] - c[..., 1]) * (a[..., 0] - c[..., 0]) + (c[..., 0] - b[..., 0]) * (
        a[..., 1] - c[..., 1]
    )
    den = np.where(np.abs(den) < 1e-12, np.nan, den)
    dx, dy = pix[..., 0] - c[..., 0], pix[..., 1] - c[..., 1]
    l0 = ((b[..., 1] - c[..., 1]) * dx + (c[..., 0] - b[..., 0]) * dy) / den
    l1 = ((c[..., 1] - a[..., 1]) * dx + (a[..., 0] - c[..., 0]) * dy) / den
    l2 = 1.0 - l0 - l1
    inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6) & (pix < size).all(axis=-1)
    n, k = np.nonzero(inside)
    x, y = pix[n, k, 0], pix[n, k, 1]
    face_ix[y, x] = ids[n]
    bary[y, x] = np.stack([l0[n, k], l1[n, k], l2[n, k]], axis=1)


@lru_cache(maxsize=2)
def uv_layout(size: int, cache_dir: str) -> UVLayout:
    """The free body's UV layout (shared by all genders), built once per process (about a second)."""
    from farm.assets.free_body import ensure_free_body

    with np.load(ensure_free_body("neutral", Path(cache_dir)), allow_pickle=False) as data:
        verts = data["v_template"].astype(np.float64)
        head = (data["J_regressor"][15] @ verts).astype(np.float64)
        return build_uv_layout(verts, data["f"], data["vt"], data["ft"], data["part_labels"], head, size)


# --- fabrics ----------------------------------------------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A garment colour: any hue, moderate saturation, from dark to light."""
    import colorsys

    h, s, v = rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.15, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _fabric(rng: np.random.Generator, pos: np.ndarray) -> np.ndarray:
    """(N,3) float colours of one garment at rest-body points `pos` (N,3): plain, striped, checked or noisy."""
    base, other = _random_colour(rng), _random_colour(rng)
    kind = rng.choice(["plain", "striped", "checked", "noisy"], p=[0.35, 0.25, 0.2, 0.2])
    around = np.arctan2(pos[:, 0], pos[:, 2]) * 0.15  # ~ metres around the body's axis
    if kind == "striped":
        period, duty = rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.7)
        t = (pos[:, 1] if rng.uniform() < 0.75 else around) / period
        mix = ((t - np.floor(t)) < duty).astype(float)
    elif kind == "checked":
        period = rng.uniform(0.02, 0.08)
        a, b = np.floor(pos[:, 1] / period), np.floor(around / period)
        mix = 0.5 * ((a + b) % 2) + 0.25 * (a % 2)
    elif kind == "noisy":
        mix = np.zeros(len(pos))
        for _ in range(6):  # a few random 3D waves make a mottled heather
            k = rng.normal(0, 1, 3)
            k *= rng.uniform(20, 120) / np.linalg.norm(k)
            mix += np.sin(pos @ k + rng.uniform(0, 2 * np.pi))
        mix = np.clip(0.5 + mix / 6, 0, 1)
        other = base * rng.uniform(0.5, 0.8)
    else:
        mix = np.zeros(len(pos))
    return base * (1 - mix[:, None]) + other * mix[:, None]


@lru_cache(maxsize=8)
def _builtin_texture(uri: str, gender: str, size: int, cache_dir: str) -> np.ndarray:
    rng = keyed_rng(text_seed(uri))  # the 64-bit sha256 seed of the uri
    layout = uv_layout(size, cache_dir)
    zone, pos = layout.zone.ravel(), layout.position.reshape(-1, 3).astype(np.float64)
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.08, 3)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    long_sleeves = rng.uniform() < 0.5
    shorts = rng.uniform() < (0.2 if gender == "female" else 0.3)
    img = np.empty((len(zone), 3))
    img[:] = skin
    top, bottom = _fabric(rng, pos), _fabric(rng, pos)
    shoe = np.array([30.0, 30.0, 30.0]) if rng.uniform() < 0.5 else _random_colour(rng) * 0.6 + 60
    for z, colour in (
        (HAIR, hair),
        (TOP, top),
        (SLEEVE, top),
        (FOREARM, top if long_sleeves else skin),
        (TROUSERS, bottom),
        (SHIN, skin if shorts else bottom),
        (SHOE, shoe),
    ):
        sel = zone == z
        img[sel] = colour[sel] if np.ndim(colour) == 2 else colour
    # A fine grain so flat colours do not look painted.
    img *= rng.uniform(0.94, 1.06, (len(zone), 1))
    return np.clip(img, 0, 255).astype(np.uint8).reshape(size, size, 3)
