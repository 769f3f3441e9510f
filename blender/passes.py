"""Turn one frame of Blender's raw passes into the farm's conventions (see farm/render/__init__.py), and write the
point caches Blender reads the bodies' vertices from. numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from farm.render.camera import Camera
from farm.render.job import BACKGROUND_DEPTH


def write_pc2(path: Path, vertices: np.ndarray) -> None:
    """PC2 point cache: a 32-byte header then float32 (frames, points, 3)."""
    frames, points, _ = vertices.shape
    header = b"POINTCACHE2\0" + np.array([1, points], "<i4").tobytes()
    header += np.array([0.0, 1.0], "<f4").tobytes() + np.array([frames], "<i4").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(vertices, dtype="<f4").tobytes())


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# Encoding through a 16-bit table is 10x faster than the power law and exact after rounding to 8 bits.
_SRGB8 = np.round(linear_to_srgb(np.arange(65536) / 65535.0) * 255.0).astype(np.uint8)


def linear_to_srgb8(x: np.ndarray) -> np.ndarray:
    return _SRGB8[(np.clip(x, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)]


def _channel(raw: dict[str, np.ndarray], pass_name: str, component: str) -> np.ndarray:
    return raw[f"ViewLayer.{pass_name}.{component}"]


def convert_frame(
    raw: dict[str, np.ndarray],
    background_linear: np.ndarray,
    camera: Camera,
    convention: str,
    eevee: bool = False,
) -> dict[str, np.ndarray]:
    """Raw EXR channels of one frame -> rgb, alpha, depth, normal, flow, segm, inst in the clip's convention.

    Cycles gives the part label and the instance as its material- and object-index passes, EEVEE (which has
    neither) as AOVs of the same values.

    In the surreal convention Blender rendered the unmirrored view, so every pass is flipped left-right
    first; the background image is composited after the flip, unmirrored, as the original's compositor did.
    """
    surreal = convention == "surreal"
    if surreal:
        raw = {k: v[:, ::-1] for k, v in raw.items()}
    alpha = np.ascontiguousarray(_channel(raw, "Combined", "A"))
    premul = np.stack([_channel(raw, "Combined", c) for c in "RGB"], axis=-1)
    # Cycles' combined pass is premultiplied and scene-linear: composite in linear light, then encode.
    linear = premul + (1.0 - alpha[..., None]) * background_linear
    rgb = linear_to_srgb8(linear)

    segm = np.rint(_channel(raw, "segm" if eevee else "Material Index", "X")).astype(np.uint8)
    fg = segm > 0
    inst_pass = "inst" if eevee else "Object Index"
    if f"ViewLayer.{inst_pass}.X" in raw:
        inst = np.rint(_channel(raw, inst_pass, "X")).astype(np.uint8)
    else:  # a one-person Cycles render skips the pass: the body is the one instance
        inst = fg.astype(np.uint8)
    depth = _channel(raw, "Depth", "Z").astype(np.float32, copy=True)  # Blender 5: planar z
    if surreal:  # the original's Z pass: along the ray
        depth = np.where(fg, depth * camera.ray_lengths, np.float32(BACKGROUND_DEPTH)).astype(np.float32)
    elif eevee:  # Cycles writes exactly 1e10 on background; EEVEE its clip distance
        depth[~fg] = BACKGROUND_DEPTH

    world_normal = [_channel(raw, "Normal", c) for c in "XYZ"]
    normal = np.zeros((*segm.shape, 3), np.float32)
    if surreal:  # Cycles' Normal pass as it is: world frame
        for i in range(3):
            normal[..., i] = world_normal[i]
    else:  # camera-frame normal = R @ world normal, plane by plane (R is mostly zeros)
        for i in range(3):
            for j in range(3):
                if camera.R[i, j] != 0.0:
                    normal[..., i] += np.float32(camera.R[i, j]) * world_normal[j]
    if eevee:  # EEVEE's normals are half floats a little short of unit length: give them Cycles' length
        length = np.sqrt((normal * normal).sum(axis=-1))
        normal[fg] /= np.maximum(length[fg, None], 1e-6)
    normal[~fg] = 0.0

    # Blender's Vector pass: (X, Y) = previous - current, (Z, W) = current - next, pixels, y up.
    if surreal:  # the raw (X, Y) of a mirrored render: the flip turns X's sign, Y stays
        flow = np.stack([-_channel(raw, "Vector", "X"), _channel(raw, "Vector", "Y")], axis=-1)
    else:
        flow = np.stack([-_channel(raw, "Vector", "Z"), _channel(raw, "Vector", "W")], axis=-1)
    flow = flow.astype(np.float32) + 0.0  # + 0.0 turns -0.0 into 0.0
    out = {
        "rgb": rgb,
        "alpha": alpha,
        "depth": depth,
        "normal": normal,
        "flow": flow,
        "segm": segm,
        "inst": inst,
    }
    # Dense correspondence (only clips that ask for it render these AOVs): the UV and the canonical-body point
    # at each pixel's centre, NaN on background.
    for name, size in (("uv", 2), ("canon", 3)):
        if f"ViewLayer.{name}.R" in raw:
            value = np.stack([_channel(raw, name, c) for c in "RGB"[:size]], axis=-1).astype(np.float32)
            value[~fg] = np.nan
            out[name] = value
    return out
