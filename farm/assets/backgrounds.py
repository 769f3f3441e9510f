"""Background images: procedural rooms (the free default) and users' own photos (LSUN-style).

A built-in background is `builtin:background/<split>/<NNNN>`; it is a small ray-cast room (walls, floor,
ceiling, windows, a door, pictures and box-like furniture under soft lighting) drawn from a generator seeded
by its uri, so it is the same picture every time and at every size. Train and test pools are disjoint sets of
seeds. A user background is an image file of any size, scaled to cover the frame and centre-cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from farm.assets.untrusted import open_image
from farm.core.errors import FarmError
from farm.core.seeding import keyed_rng

BUILTIN_BACKGROUNDS = {"train": 400, "test": 100}
BUILTIN_PREFIX = "builtin:background/"
MAX_IMAGE_PIXELS = 64_000_000  # larger files are refused rather than decoded (decompression bombs)
_SEED = 2017_0002

Array = NDArray[np.float64]
Bools = NDArray[np.bool_]


def builtin_background_uris(split: str) -> list[str]:
    if split not in BUILTIN_BACKGROUNDS:
        raise FarmError(f"unknown split {split!r} for built-in backgrounds; use 'train' or 'test'")
    return [f"{BUILTIN_PREFIX}{split}/{i:04d}" for i in range(BUILTIN_BACKGROUNDS[split])]


def load_background(uri: str, width: int, height: int) -> NDArray[np.uint8]:
    """The background as (height, width, 3) uint8 RGB, from a built-in uri or an image file."""
    if width <= 0 or height <= 0:
        raise FarmError(f"a background needs a positive size, not {width}x{height}")
    if uri.startswith(BUILTIN_PREFIX):
        split, index = _parse_builtin(uri)
        return _render_room(_builtin_rng(split, index), width, height)
    from farm.core.storage import local_asset

    path = Path(local_asset(uri).removeprefix("file://"))
    with open_image(path, "background", MAX_IMAGE_PIXELS) as image:
        from PIL import ImageOps

        fitted = ImageOps.fit(image.convert("RGB"), (width, height), method=3, centering=(0.5, 0.5))
        return np.asarray(fitted, dtype=np.uint8).copy()


def _parse_builtin(uri: str) -> tuple[str, int]:
    parts = uri[len(BUILTIN_PREFIX) :].split("/")
    if len(parts) == 2 and parts[0] in BUILTIN_BACKGROUNDS and parts[1].isdigit():
        split, index = parts[0], int(parts[1])
        if index < BUILTIN_BACKGROUNDS[split]:
            return split, index
    raise FarmError(
        f"unknown built-in background {uri!r}; use builtin:background/<train|test>/<NNNN> with NNNN below "
        f"{BUILTIN_BACKGROUNDS['train']} for train and {BUILTIN_BACKGROUNDS['test']} for test"
    )


def _builtin_rng(split: str, index: int) -> np.random.Generator:
    return keyed_rng(_SEED, split, index)  # the split counts as its crc32


# ---------------------------------------------------------------------------------------------------------
# A tiny ray caster for box-shaped rooms. World: metres, Y up, camera near the front wall looking at +Z.

_WALL_COLOURS = [
    (0.86, 0.84, 0.78), (0.80, 0.76, 0.68), (0.72, 0.74, 0.72), (0.70, 0.76, 0.80), (0.66, 0.72, 0.62),
    (0.82, 0.70, 0.60), (0.90, 0.88, 0.84), (0.60, 0.62, 0.66), (0.78, 0.66, 0.66), (0.84, 0.80, 0.62),
]  # fmt: skip
_FLOOR_COLOURS = [
    (0.55, 0.38, 0.22), (0.66, 0.50, 0.34), (0.40, 0.28, 0.18), (0.72, 0.68, 0.62), (0.45, 0.45, 0.48),
    (0.60, 0.56, 0.50), (0.35, 0.30, 0.32), (0.76, 0.64, 0.48),
]  # fmt: skip
_FURNITURE_COLOURS = [
    (0.35, 0.25, 0.18), (0.55, 0.42, 0.30), (0.80, 0.78, 0.74), (0.30, 0.34, 0.40), (0.52, 0.20, 0.18),
    (0.25, 0.40, 0.35), (0.70, 0.62, 0.48), (0.20, 0.20, 0.22), (0.60, 0.58, 0.62), (0.42, 0.48, 0.62),
]  # fmt: skip


@dataclass
class _Hit:
    t: Array  # distance along the ray, inf where nothing was hit
    colour: Array  # (N, 3) albedo
    normal: Array  # (N, 3)
    glow: Array  # (N,) light emitted (windows)


def _value_noise(rng: np.random.Generator, u: Array, v: Array, cells: int) -> Array:
    """Smooth noise in [0, 1] on a periodic grid of `cells` x `cells`, sampled at (u, v) in cell units."""
    grid = rng.random((cells, cells))
    x0 = np.floor(u).astype(int)
    y0 = np.floor(v).astype(int)
    fx = u - x0
    fy = v - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)

    def at(dx: int, dy: int) -> Array:
        return grid[(y0 + dy) % cells, (x0 + dx) % cells]

    top = at(0, 0) * (1 - fx) + at(1, 0) * fx
    bottom = at(0, 1) * (1 - fx) + at(1, 1) * fx
    return top * (1 - fy) + bottom * fy


def _pick(rng: np.random.Generator, colours: list[tuple[float, float, float]], jitter: float = 0.05) -> Array:
    base = np.array(colours[int(rng.integers(len(colours)))])
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 1)


def _render_room(rng: np.random.Generator, width: int, height: int) -> NDArray[np.uint8]:
    room_w = rng.uniform(3.5, 7.0)
    room_h = rng.uniform(2.4, 3.2)
    depth = rng.uniform(4.0, 9.0)
    cam = np.array([rng.uniform(-0.3, 0.3) * room_w, rng.uniform(1.0, 1.7), 0.2])
    yaw = rng.uniform(-0.35, 0.35)
    pitch = rng.uniform(0.0, 0.22)  # looking slightly down, so the floor shows as in most room photos
    focal = width * rng.uniform(0.7, 1.1)  # pixels; about a 50-70 degree field of view

    # Rays through every pixel; coordinates scale with the size, so every size shows the same room.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    scale = width / 320.0
    dirs = np.stack([(xs + 0.5 - width / 2) / focal, -(ys + 0.5 - height / 2) / focal, np.ones_like(xs)], -1)
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    d = dirs.reshape(-1, 3) @ rot.T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    n = len(d)

    hit = _Hit(np.full(n, np.inf), np.zeros((n, 3)), np.zeros((n, 3)), np.zeros(n))
    _room_surfaces(rng, hit, cam, d, room_w, room_h, depth)
    for _ in range(int(rng.integers(1, 5))):
        _furniture(rng, hit, cam, d, room_w, depth)

    # Light: a soft ceiling lamp plus a sun-like direction plus ambient, and the windows' own glow.
    points = cam + d * np.where(np.isfinite(hit.t), hit.t, 1.0)[:, None]
    lamp = np.array([rng.uniform(-0.3, 0.3) * room_w, room_h - 0.2, rng.uniform(0.4, 0.8) * depth])
    to_lamp = lamp - points
    dist = np.linalg.norm(to_lamp, axis=1)
    lamp_term = np.clip((hit.normal * to_lamp).sum(1) / np.maximum(dist, 1e-6), 0, 1) / (1 + 0.08 * dist**2)
    sun = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1.0), rng.uniform(-1, 0.2)])
    sun /= np.linalg.norm(sun)
    sun_term = np.clip(hit.normal @ sun, 0, 1)
    warmth = np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.75, 0.95)])
    light = rng.uniform(0.35, 0.55) + rng.uniform(0.4, 0.8) * lamp_term + rng.uniform(0.1, 0.3) * sun_term
    rgb = hit.colour * light[:, None] * warmth + hit.glow[:, None]
    rgb = rgb.reshape(height, width, 3)

    # Camera look: vignetting, exposure, sensor noise, a little blur like a JPEG photo.
    r2 = ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / (width**2 / 4 + height**2 / 4)
    rgb *= (1 - rng.uniform(0.15, 0.4) * r2)[..., None] * rng.uniform(0.85, 1.15)
    noise_rng = keyed_rng(int(rng.integers(2**32)))
    rgb += noise_rng.normal(0, 0.012, rgb.shape)
    image = (np.clip(rgb, 0, 1) ** (1 / 1.15) * 255 + 0.5).astype(np.uint8)
    from PIL import Image, ImageFilter

    blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.5 * scale))
    return np.asarray(blurred, dtype=np.uint8).copy()


def _plane(hit: _Hit, t: Array, mask: Bools, colour: Array, normal: tuple[float, float, float]) -> Bools:
    """Record a plane where it is the nearest hit so far; returns the pixels it won."""
    closer = mask & (t > 1e-6) & (t < hit.t)
    hit.t[closer] = t[closer]
    hit.colour[closer] = colour[closer] if colour.ndim == 2 else colour
    hit.normal[closer] = normal
    hit.glow[closer] = 0.0
    return closer


def _room_surfaces(
    rng: np.random.Generator, hit: _Hit, cam: Array, d: Array, room_w: float, room_h: float, depth: float
) -> None:
    wall = _pick(rng, _WALL_COLOURS)
    accent = _pick(rng, _WALL_COLOURS) if rng.random() < 0.4 else wall
    ceiling = np.clip(wall * 0.3 + 0.65, 0, 1)
    floor_colour = _pick(rng, _FLOOR_COLOURS)
    floor_kind = rng.choice(["planks", "tiles", "carpet"])
    stripes = rng.random() < 0.25
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 1] < 0, -cam[1] / d[:, 1], np.inf)
        t_ceiling = np.where(d[:, 1] > 0, (room_h - cam[1]) / d[:, 1], np.inf)
        t_left = np.where(d[:, 0] < 0, (-room_w / 2 - cam[0]) / d[:, 0], np.inf)
        t_right = np.where(d[:, 0] > 0, (room_w / 2 - cam[0]) / d[:, 0], np.inf)
        t_back = np.where(d[:, 2] > 0, (depth - cam[2]) / d[:, 2], np.inf)
    everywhere = np.ones(len(d), dtype=bool)

    # Floor pattern in floor coordinates (x across, z into the room).
    p = cam + d * np.where(np.isfinite(t_floor), t_floor, 0)[:, None]
    if floor_kind == "planks":
        board = rng.uniform(0.12, 0.22)
        row = np.floor(p[:, 0] / board)
        shade = 0.85 + 0.3 * _value_noise(rng, row, p[:, 2] / 1.5 + row * 0.37, 64)
        seam = (np.abs(p[:, 0] / board - np.round(p[:, 0] / board)) < 0.04) * 0.35
        floor = floor_colour[None] * (shade - seam)[:, None]
    elif floor_kind == "tiles":
        tile = rng.uniform(0.3, 0.6)
        fx, fz = p[:, 0] / tile, p[:, 2] / tile
        grout = (np.minimum(np.abs(fx - np.round(fx)), np.abs(fz - np.round(fz))) < 0.03) * 0.3
        checker = ((np.floor(fx) + np.floor(fz)) % 2) * (0.12 if rng.random() < 0.5 else 0.0)
        floor = floor_colour[None] * (1 - grout - checker)[:, None]
    else:
        fuzz = _value_noise(rng, p[:, 0] * 6, p[:, 2] * 6, 64)
        floor = floor_colour[None] * (0.85 + 0.25 * fuzz)[:, None]
    _plane(hit, t_floor, everywhere, floor, (0, 1, 0))
    lit = _plane(hit, t_ceiling, everywhere, np.broadcast_to(ceiling, d.shape).copy(), (0, -1, 0))
    hit.glow[lit] = 0.15  # light bounced up from the room; the lamp does not reach it

    for t, normal, colour, along in (
        (t_left, (1.0, 0.0, 0.0), wall, 2),
        (t_right, (-1.0, 0.0, 0.0), wall, 2),
        (t_back, (0.0, 0.0, -1.0), accent, 0),
    ):
        q = cam + d * np.where(np.isfinite(t), t, 0)[:, None]
        albedo = np.broadcast_to(colour, d.shape).copy()
        if stripes:
            albedo *= (0.93 + 0.07 * (np.floor(q[:, along] / 0.15) % 2))[:, None]
        skirting = q[:, 1] < 0.1
        albedo[skirting] = np.clip(colour * 0.5 + 0.45, 0, 1)
        won = _plane(hit, t, everywhere, albedo, normal)
        _wall_openings(rng, hit, q, won, along, room_w if along == 0 else depth, room_h)


def _wall_openings(
    rng: np.random.Generator, hit: _Hit, q: Array, won: Bools, along: int, length: float, room_h: float
) -> None:
    """Windows, a door and pictures on one wall, as rectangles in the wall's own (along, up) coordinates."""
    a = q[:, along] + (length / 2 if along == 0 else 0)
    up = q[:, 1]
    for _ in range(int(rng.integers(0, 4))):
        kind = rng.choice(["window", "window", "door", "picture", "picture"])
        if kind == "window":
            w, h, bottom = rng.uniform(0.8, 1.8), rng.uniform(1.0, 1.6), rng.uniform(0.7, 1.0)
        elif kind == "door":
            w, h, bottom = rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.2), 0.0
        else:
            w, h, bottom = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8), rng.uniform(1.2, 1.6)
        h = min(h, room_h - bottom - 0.1)
        start = rng.uniform(0.2, max(0.3, length - w - 0.2))
        fa = (a - start) / w
        fu = (up - bottom) / h
        inside = won & (fa > 0) & (fa < 1) & (fu > 0) & (fu < 1)
        frame = inside & ((np.minimum(fa, 1 - fa) * w < 0.05) | (np.minimum(fu, 1 - fu) * h < 0.05))
        if kind == "window":
            sky = np.stack([0.75 + 0.2 * fu, 0.85 + 0.12 * fu, np.ones_like(fu)], 1)
            hit.colour[inside] = sky[inside] * 0.3
            hit.glow[inside] = rng.uniform(0.5, 0.75)
            mullion = inside & ((np.abs(fa - 0.5) * w < 0.025) | (np.abs(fu - 0.55) * h < 0.025))
            hit.colour[frame | mullion] = 0.9
            hit.glow[frame | mullion] = 0.0
        elif kind == "door":
            wood = _pick(rng, _FURNITURE_COLOURS)
            panel = (np.abs(fa - 0.5) < 0.35) & ((np.abs(fu - 0.3) < 0.2) | (np.abs(fu - 0.72) < 0.18))
            hit.colour[inside] = wood * np.where(panel[inside], 0.9, 1.0)[:, None]
            hit.colour[frame] = np.clip(wood * 1.2, 0, 1)
        else:
            art = _value_noise(rng, fa * 4, fu * 4, 16)
            c1, c2 = rng.random(3), rng.random(3)
            hit.colour[inside] = c1 * art[inside, None] + c2 * (1 - art[inside, None])
            hit.colour[frame] = rng.uniform(0.1, 0.9)


def _furniture(
    rng: np.random.Generator, hit: _Hit, cam: Array, d: Array, room_w: float, depth: float
) -> None:
    """An axis-aligned box standing on the floor (a bed, sofa, table, cabinet or shelf, roughly)."""
    w, h, dz = rng.uniform(0.5, 2.2), rng.uniform(0.4, 1.9), rng.uniform(0.4, 1.2)
    against_wall = rng.random() < 0.6
    z0 = depth - dz if against_wall else rng.uniform(0.5 * depth, max(0.5 * depth + 0.1, depth - dz))
    x0 = rng.uniform(-room_w / 2, room_w / 2 - w)
    lo = np.array([x0, 0.0, z0])
    hi = np.array([x0 + w, h, z0 + dz])
    colour = _pick(rng, _FURNITURE_COLOURS, 0.08)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - cam) / d
        t2 = (hi - cam) / d
    near = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
    far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    t_in = near.max(1)
    t_out = far.min(1)
    inside = (t_out >= t_in) & (t_in > 0)
    axis = near.argmax(1)
    closer = inside & (t_in < hit.t)
    normal = np.zeros_like(d)
    normal[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    p = cam + d * np.where(closer, t_in, 0)[:, None]
    grain = 0.9 + 0.15 * _value_noise(rng, p[:, 0] * 3, p[:, 1] * 3 + p[:, 2] * 3, 32)
    hit.t[closer] = t_in[closer]
    hit.colour[closer] = colour * grain[closer, None]
    hit.normal[closer] = normal[closer]
    hit.glow[closer] = 0.0
