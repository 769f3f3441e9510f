"""The members of a `farm export shards` sample, and reading a sample back into the item `load_clip` gives.

No torch here. A sample is one frame: `__key__`, `json` (the clip, its database `clip_id`, split, run, QC, ...,
the frame, and `encoding`), `rgb.png` or `rgb.jpg`, and one member per array of the frame. Two encodings:

compact (the default; at 320x240 about 98 KB a frame with PNG RGB, 50 KB with JPEG, 48 KB more with uv and
canon: README "Size on disk", benchmarks/shards.py):
- segm, parts14, inst, depth_bins: `<name>.png`, 8-bit grayscale PNG, exact (any PNG reader, webdataset's
  `.decode("l8")` included).
- depth, flow, normal, uv, canon: `<name>.png16`, a 16-bit grayscale PNG of fixed-point codes, a (H, W, C) array
  stored as C planes stacked vertically (C * H rows, W columns). The extension is not `.png` so that an image
  decoder (webdataset's `.decode("rgb8")` turns a 16-bit PNG into 8 bits) leaves it alone: `decode_sample` reads
  it. Each array's code, and its bound (the largest error against the float32 array `load_clip` gives):
  - depth: millimetres, code = round(1000 z); 65535 is the background (depth 1e10, given back as exactly 1e10).
    Body depth must lie in 0..65.534 m. Error <= 0.5 mm (0.504 with float32's rounding).
  - flow: code = round(64 f) + 32768, 1/64 px steps; |f| must stay under 512 px. Error <= 1/128 px; 0 (the
    static background, the last frame) comes back exactly 0.
  - normal: two planes, the octahedral projection (o_x, o_y) of the unit normal, code = round((o + 1) / 2 *
    65534) + 1; code 0 in both planes is the zero normal (the background), given back as exactly 0. Decoded
    normals are unit vectors within NORMAL_BOUND_DEG (0.01 degrees; under 0.004 measured) of the clip's.
  - uv: code = round(uv * 4095) + 1 for uv in 0..1, error <= 1 / 8190 (1.22e-4, a 16th of a texel of a 512x512
    texture); code 0 is NaN.
  - canon: code = round(1000 c) + 32768 (millimetres) for |c| <= 32.767 m, error <= 0.5 mm (0.502 with float32's
    rounding); code 0 is NaN.
    uv's and canon's NaN (the background) is kept channel by channel.
  A value outside its code's range refuses the export in one sentence (FarmError) rather than clamping.
- joints2d, joints3d, visible, bbox, k, r, t: `<name>.npy`, exact (webdataset decodes .npy itself).

raw (`--encoding raw`): every array as `<name>.npy`, exactly the float32/uint8/bool arrays of load_clip (about
2.2 MB a frame at 320x240, 3.8 MB with uv and canon).

Read shards back with the `webdataset` package and `decode_sample`, which takes the undecoded sample and gives
load_clip's arrays of that frame (the same keys: rgb, segm, parts14, inst, depth, depth_bins, normal, flow,
joints2D, joints3D, visible, bbox, K, R, t, and uv, canon for a clip with correspondence) plus `__key__`,
`meta` (the json member), and clip, split, run, frame as SurrealClips' items have them:

    import webdataset as wds
    from farm.dataset.shards import decode_sample
    dataset = wds.WebDataset("shards/train-{000000..000009}.tar", shardshuffle=100).shuffle(1000).map(decode_sample)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from farm.core.errors import FarmError
from farm.dataset.clips import BACKGROUND_DEPTH

# load_clip's per-frame arrays, in a sample's member order (member names are lower case: webdataset's own)
ARRAYS = ("segm", "parts14", "inst", "depth", "depth_bins", "normal", "flow", "joints2D", "joints3D", "visible", "bbox",
          "K", "R", "t")  # fmt: skip
CORR_ARRAYS = ("uv", "canon")  # a clip with correspondence (ClipSpec.correspondence) adds these
ENCODINGS = ("compact", "raw")
LABELS = ("segm", "parts14", "inst", "depth_bins")  # 8-bit PNG in the compact encoding
FIXED = ("depth", "flow", "normal", "uv", "canon")  # 16-bit fixed-point PNG (.png16) in the compact encoding

DEPTH_SCALE = 1000.0  # codes per metre
DEPTH_BACKGROUND_CODE = 65535
FLOW_SCALE, FLOW_OFFSET = 64.0, 32768  # codes per pixel, the code of 0
NORMAL_STEPS = 65534  # octahedral codes 1..65535; 0 is the zero normal
UV_STEPS = 4095  # codes 1..4096 for 0..1 (1/16 of a texel of a 512x512 texture at most); 0 is NaN
CANON_SCALE, CANON_OFFSET = 1000.0, 32768  # codes per metre, the code of 0; 0 is NaN
# The stated bounds (a decoded value against load_clip's: half a code step, and float32's rounding of the
# decoded value where that is not exact), which the tests and benchmarks/shards.py check
DEPTH_BOUND_M = 0.5 / DEPTH_SCALE + 4e-6  # 0.504 mm: float32 steps are under 8e-6 m below 65.5 m
FLOW_BOUND_PX = 0.5 / FLOW_SCALE  # 1/128 px: a code / 64 is exact in float32
NORMAL_BOUND_DEG = 0.01  # the angle between the decoded unit normal and the clip's (measured: under 0.004)
UV_BOUND = 0.5 / UV_STEPS + 1e-7  # 1.22e-4
CANON_BOUND_M = 0.5 / CANON_SCALE + 2e-6  # 0.502 mm


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _png(image: np.ndarray) -> bytes:
    """An 8-bit (uint8, 2D gray or HxWx3 RGB) or 16-bit (uint16, 2D gray) PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _image(rgb: np.ndarray, kind: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG" if kind == "png" else "JPEG", quality=95)
    return buf.getvalue()


def _read_png(data: bytes, dtype: type) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img).astype(dtype)  # a 16-bit PNG opens as "I;16" (or "I" on an older Pillow)


def _fixed(
    name: str, values: np.ndarray, scale: float, offset: int, lo: int, what: str, hi: int = 65535
) -> np.ndarray:
    """round(values * scale) + offset as uint16, refusing (in one sentence) a value whose code falls outside
    lo..hi or that is NaN: an export stops rather than clamping."""
    codes = np.rint(values * scale) + offset
    bad = ~((codes >= lo) & (codes <= hi))
    if bad.any():
        found = values[bad].flat[0]
        raise FarmError(
            f"{name} holds {found!r}, outside the {(lo - offset) / scale:g}..{(hi - offset) / scale:g} {what} "
            "that the compact shard encoding stores; export with --encoding raw"
        )
    return codes.astype(np.uint16)


def _planes(codes: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (C * H, W): the channels stacked vertically, one grayscale image."""
    return np.concatenate([codes[..., c] for c in range(codes.shape[-1])], 0)


def _unplanes(image: np.ndarray, channels: int) -> np.ndarray:
    return np.stack(np.split(image, channels, 0), -1)


def _octahedral(normal: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) -> their octahedral projection (..., 2) in [-1, 1]^2."""
    n = normal.astype(np.float64)
    n = n / np.maximum(np.abs(n).sum(-1, keepdims=True), 1e-30)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    fold = z < 0
    fx = np.where(fold, (1 - np.abs(y)) * np.where(x >= 0, 1.0, -1.0), x)
    fy = np.where(fold, (1 - np.abs(x)) * np.where(y >= 0, 1.0, -1.0), y)
    return np.stack([fx, fy], -1)


def _from_octahedral(o: np.ndarray) -> np.ndarray:
    x, y = o[..., 0], o[..., 1]
    z = 1 - np.abs(x) - np.abs(y)
    fold = z < 0
    nx = np.where(fold, (1 - np.abs(y)) * np.where(x >= 0, 1.0, -1.0), x)
    ny = np.where(fold, (1 - np.abs(x)) * np.where(y >= 0, 1.0, -1.0), y)
    n = np.stack([nx, ny, z], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def encode_fixed(name: str, array: np.ndarray) -> np.ndarray:
    """One frame's depth (H, W), flow (H, W, 2), normal (H, W, 3), uv (H, W, 2) or canon (H, W, 3) as its uint16
    codes, (H, W) or (H, W, C) (the module docstring gives each code)."""
    a = np.asarray(array, np.float64)
    if name == "depth":
        background = a >= BACKGROUND_DEPTH / 2
        body = _fixed(
            name, np.where(background, 0.0, a), DEPTH_SCALE, 0, 0, "metres", DEPTH_BACKGROUND_CODE - 1
        )
        return np.where(background, DEPTH_BACKGROUND_CODE, body).astype(np.uint16)
    if name == "flow":
        return _fixed(name, a, FLOW_SCALE, FLOW_OFFSET, 0, "pixels")
    if name == "normal":
        zero = (a == 0).all(-1)  # the background's 0 (a NaN is not: it fails below)
        if not np.isfinite(a).all():
            raise FarmError(
                f"normal holds {a[~np.isfinite(a)].flat[0]!r}, which the compact shard encoding cannot store; "
                "export with --encoding raw"
            )
        o = _octahedral(np.where(zero[..., None], (0.0, 0.0, 1.0), a))
        codes = np.rint((o + 1) / 2 * NORMAL_STEPS) + 1
        return np.where(zero[..., None], 0, codes).astype(np.uint16)
    nan = np.isnan(a)
    if name == "uv":
        codes = _fixed(name, np.where(nan, 0.0, a), UV_STEPS, 1, 1, "(texture coordinates)", UV_STEPS + 1)
        return np.where(nan, 0, codes).astype(np.uint16)
    if name == "canon":
        codes = _fixed(name, np.where(nan, 0.0, a), CANON_SCALE, CANON_OFFSET, 1, "metres")
        return np.where(nan, 0, codes).astype(np.uint16)
    raise ValueError(f"no fixed-point code for {name}")


def decode_fixed(name: str, codes: np.ndarray) -> np.ndarray:
    """encode_fixed's inverse: float32 as load_clip gives it (1e10 background depth, 0 background normal, NaN
    background uv and canon)."""
    c = codes.astype(np.int64)
    if name == "depth":
        return np.where(c == DEPTH_BACKGROUND_CODE, BACKGROUND_DEPTH, c / DEPTH_SCALE).astype(np.float32)
    if name == "flow":
        return ((c - FLOW_OFFSET) / FLOW_SCALE).astype(np.float32)
    if name == "normal":
        zero = (c == 0).all(-1)
        n = _from_octahedral(np.where(zero[..., None], 1, c - 1) / NORMAL_STEPS * 2 - 1)
        return np.where(zero[..., None], 0.0, n).astype(np.float32)
    if name == "uv":
        return np.where(c == 0, np.nan, (c - 1) / UV_STEPS).astype(np.float32)
    if name == "canon":
        return np.where(c == 0, np.nan, (c - CANON_OFFSET) / CANON_SCALE).astype(np.float32)
    raise ValueError(f"no fixed-point code for {name}")


def normal_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The angle in degrees between normals (..., 3), from atan2(|a x b|, a . b) in float64 (arccos of a float32
    dot product cannot resolve a thousandth of a degree)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))


def frame_members(
    clip: dict[str, np.ndarray], f: int, image: str, encoding: str = "compact"
) -> dict[str, bytes]:
    """Frame f of load_clip's arrays as a sample's members {extension: bytes}, rgb first (no key, no json)."""
    if encoding not in ENCODINGS:
        raise FarmError(f"shard encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    members = {f"rgb.{image}": _image(clip["rgb"][f], image)}
    for key in ARRAYS + tuple(k for k in CORR_ARRAYS if k in clip):
        members.update([encode_member(key, clip[key][f], encoding)])
    return members


def encode_member(key: str, frame: np.ndarray, encoding: str = "compact") -> tuple[str, bytes]:
    """One array of a frame (load_clip's key, e.g. "joints2D") as its member: (extension, bytes)."""
    name = key.lower()
    if encoding == "raw" or key not in LABELS + FIXED:
        return f"{name}.npy", _npy(frame)
    if key in LABELS:
        return f"{name}.png", _png(np.asarray(frame, np.uint8))
    codes = encode_fixed(key, frame)
    return f"{name}.png16", _png(codes if codes.ndim == 2 else _planes(codes))


def shard_samples(
    clip: dict[str, np.ndarray], key: str, meta: dict[str, Any], image: str, encoding: str = "compact"
) -> Iterator[dict[str, bytes]]:
    """One WebDataset sample per frame: `__key__` (`<key>-fNNN`), the frame's members, and `json` (meta with the
    frame and the encoding)."""
    for f in range(len(clip["segm"])):
        sample = {"__key__": f"{key}-f{f:03d}".encode(), **frame_members(clip, f, image, encoding)}
        sample["json"] = json.dumps({**meta, "frame": f, "encoding": encoding}).encode()
        yield sample


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A sample as webdataset reads it (members undecoded, bytes; an already decoded json is taken as it is),
    of either encoding -> load_clip's arrays of that frame (numpy, the same dtypes), with `__key__`, `meta` (the
    json member) and clip, split, run, frame."""
    from PIL import Image

    names = {k.lower(): k for k in ARRAYS + CORR_ARRAYS}
    item: dict[str, Any] = {"__key__": sample.get("__key__")}
    for ext, data in sample.items():
        if ext.startswith("__"):
            continue
        name, _, kind = ext.partition(".")
        if ext == "json":
            item["meta"] = json.loads(data) if isinstance(data, (bytes, str)) else data
        elif name == "rgb" and kind in ("png", "jpg"):
            with Image.open(io.BytesIO(data)) as img:
                item["rgb"] = np.asarray(img.convert("RGB"))
        elif name in names and kind == "npy":
            item[names[name]] = np.load(io.BytesIO(data), allow_pickle=False)
        elif name in names and kind == "png" and names[name] in LABELS:
            item[names[name]] = _read_png(data, np.uint8)
        elif name in names and kind == "png16" and names[name] in FIXED:
            key = names[name]
            codes = _read_png(data, np.uint16)
            channels = {"depth": 1, "flow": 2, "normal": 2, "uv": 2, "canon": 3}[key]
            item[key] = decode_fixed(key, codes if channels == 1 else _unplanes(codes, channels))
    meta = item.get("meta") or {}
    item.update(clip=meta.get("clip"), split=meta.get("split"), run=meta.get("run"), frame=meta.get("frame"))
    return item


def shard_dataset(urls: Any, **kwargs: Any) -> Any:
    """`webdataset.WebDataset(urls, **kwargs).map(decode_sample)`: shards as load_clip's items, frame by frame."""
    import webdataset as wds

    return wds.WebDataset(urls, **kwargs).map(decode_sample)
