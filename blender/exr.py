"""A minimal reader for the uncompressed scanline OpenEXR files Blender writes for our passes.

Pure numpy (no bpy, and the bpy wheel ships no OpenImageIO). It reads only what the renderer writes:
scanline, compression NONE, HALF/FLOAT/UINT channels, single-part or multi-part (Blender 5 writes one part
per pass in a multilayer file). Anything else is refused.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAGIC = 20000630
_TILED, _MULTIPART = 0x200, 0x1000
_PIXEL_TYPES: dict[int, np.dtype] = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


def _cstr(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode(), end + 1


def _read_header(buf: bytes, pos: int) -> tuple[dict[str, bytes], int]:
    attrs: dict[str, bytes] = {}
    while buf[pos] != 0:
        name, pos = _cstr(buf, pos)
        _kind, pos = _cstr(buf, pos)
        (size,) = struct.unpack_from("<i", buf, pos)
        attrs[name] = buf[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return attrs, pos + 1


def _channels(raw: bytes) -> list[tuple[str, np.dtype]]:
    out: list[tuple[str, np.dtype]] = []
    pos = 0
    while raw[pos] != 0:
        name, pos = _cstr(raw, pos)
        pixel_type, _plinear, xs, ys = struct.unpack_from("<iB3xii", raw, pos)
        if xs != 1 or ys != 1:
            raise ValueError("subsampled EXR channels are not supported")
        out.append((name, _PIXEL_TYPES[pixel_type]))
        pos += 16
    return out


def read_exr(path: str | Path) -> dict[str, np.ndarray]:
    """Every channel of the file as an (H, W) array, row 0 at the top, keyed by its full channel name."""
    buf = Path(path).read_bytes()
    magic, version = struct.unpack_from("<ii", buf, 0)
    if magic != _MAGIC or version & _TILED:
        raise ValueError(f"{path}: not a scanline OpenEXR file")
    multipart = bool(version & _MULTIPART)
    pos = 8
    headers = []
    while True:
        attrs, pos = _read_header(buf, pos)
        headers.append(attrs)
        if not multipart or buf[pos] == 0:
            break
    pos += int(multipart)  # the empty header that ends the list of parts
    out: dict[str, np.ndarray] = {}
    for attrs in headers:
        if attrs["compression"][0] != 0:
            raise ValueError(f"{path}: only uncompressed EXR files are supported")
        x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"])
        width, height = x1 - x0 + 1, y1 - y0 + 1
        channels = _channels(attrs["channels"])
        # One scanline per chunk: ([part,] y, size, the row of each channel in header order).
        offsets = np.frombuffer(buf, "<u8", height, pos).astype(np.int64)
        pos += 8 * height
        row = np.dtype([(name, dt, (width,)) for name, dt in channels])
        fields = [("part", "<i4")] if multipart else []
        chunk = np.dtype([*fields, ("y", "<i4"), ("size", "<i4"), ("row", row)])
        if height > 1 and not np.all(np.diff(offsets) == chunk.itemsize):
            raise ValueError(f"{path}: unexpected EXR chunk layout")
        rows = np.frombuffer(buf, chunk, height, int(offsets[0]))
        rows = rows[np.argsort(rows["y"])]
        prefix = attrs["name"].decode().rstrip("\0") + "." if "name" in attrs else ""
        for name, _ in channels:
            full = name if name.startswith(prefix) else prefix + name
            out[full] = np.ascontiguousarray(rows["row"][name])
    return out
