"""The one reader of a clip's stored files (the quality gate's `farm qc`, the dataset, the contact sheet).

Stored files are untrusted (anyone with a worker's bucket credentials can write them), so every reader takes
the expected sizes from the clip's spec and refuses anything else with a `BadClipFile` of one sentence naming
the file. The .mat files are parsed here rather than by scipy.io.loadmat, which allocates whatever a
variable's header declares and inflates compressed variables whole (a 195 KB file held 435 MB): each
variable's header is inflated first and checked against what the spec allows, and its data is inflated only
up to that size. The mp4 reader is worker/video.py's `read_mp4`.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from farm.core.errors import FarmError
from farm.core.spec import ClipSpec

MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB
# The spec sizes every read, and the manifest's spec is as untrusted as the rest: a camera past this is refused
# rather than trusted to size an allocation (SURREAL's is 320x240).
MAX_FRAME_PIXELS = 4096 * 4096
# A pass file's variables: <prefix>_<frame>, each height x width [x channels] of one type (the README's table).
PASS_LAYOUT: dict[str, tuple[tuple[int, ...], type]] = {
    "depth": ((), np.float32),
    "segm": ((), np.uint8),
    "gtflow": ((2,), np.float32),
    "normal": ((3,), np.float32),
    "inst": ((), np.uint8),
    # `<name>_corr.mat` (ClipSpec.correspondence) holds two: uv_<frame> and canon_<frame>, NaN on background
    "uv": ((2,), np.float32),
    "canon": ((3,), np.float32),
}
CORR_PREFIXES = ("uv", "canon")

# MAT-5 (MATLAB's level 5 format): array classes of numbers, data types, element types.
_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MATRIX, _COMPRESSED = 14, 15
_HEADER_BYTES = 1024  # what a variable's flags, dimensions and name may take before its data
_COMPLEX = 0x800
Endian = Literal["<", ">"]


class BadClipFile(FarmError):
    """A clip's file is missing, corrupt or not what its spec says: `path` and the `problem` ("is missing",
    "cannot be read (...)", ...), which make one sentence together."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}")


def one_line(exc: BaseException) -> str:
    """An exception's text on one line: its last non-empty line (ffmpeg's error ends its output)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# ---- manifest ----


def read_manifest(folder: Path, name: str) -> tuple[ClipSpec, dict[str, Any], int]:
    """(spec, manifest, frames) of the clip `name` in `folder`; `frames` is the manifest's, checked against
    the spec (see manifest_frames)."""
    path = Path(folder) / f"{name}_manifest.json"
    if not path.is_file():
        raise BadClipFile(path, "is missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BadClipFile(path, f"is larger than a manifest's {MAX_MANIFEST_BYTES:,} bytes")
    try:
        manifest = json.loads(path.read_text())
        spec = ClipSpec.model_validate(manifest["spec"])
    except Exception as exc:
        raise BadClipFile(path, f"is not a valid manifest ({type(exc).__name__}: {one_line(exc)})") from None
    width, height = spec.camera.width, spec.camera.height
    if not (0 < width and 0 < height and width * height <= MAX_FRAME_PIXELS):
        raise BadClipFile(path, f"gives a {width}x{height} camera, not 1 to {MAX_FRAME_PIXELS:,} pixels")
    return spec, manifest, manifest_frames(path, manifest, spec)


def manifest_frames(path: Path, manifest: dict[str, Any], spec: ClipSpec) -> int:
    """The clip's frames as its manifest says (the spec's when it says none): 1 up to the spec's frame_count,
    since readers size their work by it."""
    frames = manifest.get("frames") or spec.frame_count
    if type(frames) is not int or not 1 <= frames <= spec.frame_count:
        raise BadClipFile(
            path, f"says the clip has {frames!r:.40} frames, but its spec allows 1 to {spec.frame_count}"
        )
    return frames


# ---- MATLAB 5 files ----


@dataclass(frozen=True)
class Want:
    """What a variable may be: `shape`'s number of axes with each at most as long, of `dtype` (None: any
    numeric type, counted at 8 bytes a value)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any] | None = None

    @property
    def max_bytes(self) -> int:
        return math.prod(self.shape) * (self.dtype.itemsize if self.dtype is not None else 8)


class _Element:
    """One top-level element's bytes, read or inflated on demand, never more than `limit` of them."""

    def __init__(self, f: IO[bytes], size: int, compressed: bool, tag: bytes) -> None:
        self.f, self.left, self.limit = f, size, _HEADER_BYTES
        self.inflater = zlib.decompressobj() if compressed else None
        self.buf = bytearray() if compressed else bytearray(tag)  # start at the miMATRIX tag either way

    def need(self, n: int) -> None:
        if n > self.limit:
            raise ValueError("a variable is longer than its header says")
        while len(self.buf) < n:
            if self.inflater is None:
                data = self.f.read(min(n - len(self.buf), self.left))
                if not data:
                    raise ValueError("it ends early")
                self.left -= len(data)
                self.buf += data
                continue
            data = self.inflater.unconsumed_tail
            if not data:
                data = self.f.read(min(self.left, 1 << 16)) if not self.inflater.eof else b""
                if not data:
                    raise ValueError("a compressed variable ends early")
                self.left -= len(data)
            self.buf += self.inflater.decompress(data, n - len(self.buf))  # at most what is still needed

    def tag(self, pos: int, e: Endian) -> tuple[int, int, int, int]:
        """(type, size, data start, next element) of the sub-element at `pos`."""
        self.need(pos + 8)
        kind, size = struct.unpack_from(e + "II", self.buf, pos)
        if kind >> 16:  # the small format: type and size in 4 bytes, the data in the next 4
            return kind & 0xFFFF, kind >> 16, pos + 4, pos + 8
        return kind, size, pos + 8, pos + 8 + size + (-size % 8)

    def data(self, pos: int, e: Endian) -> tuple[int, bytes, int]:
        kind, size, start, end = self.tag(pos, e)
        self.need(start + size)
        return kind, bytes(self.buf[start : start + size]), end


def read_mat(path: Path, expect: Callable[[str], Want | None]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of each numeric variable of a MATLAB 5 file that `expect` wants (the others are skipped
    without being inflated), as scipy.io.loadmat gives it. A variable declared larger
    than `expect` allows is refused before its data is read; memory stays within what `expect` allows."""
    path = Path(path)
    if not path.is_file():
        raise BadClipFile(path, "is missing")
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            head = f.read(128)
            if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
                raise ValueError("not a MATLAB 5 file")
            e: Endian = "<" if head[126:128] == b"IM" else ">"
            if struct.unpack_from(e + "H", head, 124)[0] != 0x0100:
                raise ValueError("not a MATLAB 5 file; v7.3 files are not read")
            while tag := f.read(8):
                kind, size = struct.unpack(e + "II", tag.ljust(8, b"\0"))
                start = f.tell()
                if len(tag) < 8 or start + size > file_size:
                    raise ValueError("it ends early")
                if kind not in (_MATRIX, _COMPRESSED):
                    raise ValueError(f"an element of type {kind} stands where a variable should")
                found = _variable(_Element(f, size, kind == _COMPRESSED, tag), e, expect, path)
                if found is not None:
                    yield found
                f.seek(start + size)
    except (OSError, ValueError, struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise BadClipFile(path, f"cannot be read ({one_line(exc)})") from None


def _variable(
    el: _Element, e: Endian, expect: Callable[[str], Want | None], path: Path
) -> tuple[str, np.ndarray] | None:
    kind, size, pos, _ = el.tag(0, e)
    if kind != _MATRIX:
        raise ValueError(f"a compressed element holds type {kind}, not a variable")
    _, flags, pos = el.data(pos, e)
    _, dims_raw, pos = el.data(pos, e)
    _, name_raw, pos = el.data(pos, e)
    if len(flags) < 8 or len(dims_raw) % 4:
        raise ValueError("a variable's header is malformed")
    name = name_raw.decode("ascii")
    want = expect(name)
    if want is None:
        return None
    klass = struct.unpack_from(e + "I", flags)[0]
    if klass & 0xFF not in _CLASSES or klass & _COMPLEX:
        raise BadClipFile(path, f"holds {name} as MATLAB array class {klass & 0xFF}, not real numbers")
    dtype = np.dtype(_CLASSES[klass & 0xFF])
    dims = struct.unpack(f"{e}{len(dims_raw) // 4}i", dims_raw)
    dims += (1,) * (len(want.shape) - len(dims))  # MATLAB drops trailing axes of length 1
    declared = math.prod(dims) * dtype.itemsize
    expected = f"{_dims(want.shape)} {want.dtype if want.dtype is not None else 'numbers'}"
    if declared > want.max_bytes:
        raise BadClipFile(
            path,
            f"declares {name} as {_dims(dims)} {dtype} ({declared:,} bytes), "
            f"larger than the {expected} ({want.max_bytes:,} bytes) its spec allows",
        )
    if size > want.max_bytes + _HEADER_BYTES:  # the element, however its data is typed
        raise BadClipFile(
            path, f"declares {name} in {size:,} bytes, more than the {expected} its spec allows"
        )
    if len(dims) != len(want.shape) or any(not 0 <= d <= w for d, w in zip(dims, want.shape, strict=True)):
        raise BadClipFile(path, f"declares {name} as {_dims(dims)}, not the {expected} its spec says")
    if want.dtype is not None and dtype != want.dtype:
        raise BadClipFile(path, f"holds {name} as {dtype}, not the {expected} its spec says")
    el.limit = 8 + size  # the data may now be inflated, up to the size just checked
    kind, nbytes, start, _ = el.tag(pos, e)
    data_type = np.dtype(_TYPES.get(kind, "V1")).newbyteorder(e)
    count = math.prod(dims)
    if kind not in _TYPES or nbytes != count * data_type.itemsize:
        raise ValueError(f"{name} holds {nbytes} bytes of type {kind} for {count} values")
    el.need(start + nbytes)
    values = np.frombuffer(el.buf, data_type, count, start).astype(dtype)  # a copy: the bytes go
    return name, values.reshape(dims, order="F")


# ---- the clip's .mat files ----


def read_info(path: Path, frames: int, people: int = 1, exact: bool = True) -> dict[str, np.ndarray]:
    """The `_info.mat` arrays the readers use, those present of: joints2D and joints3D (2|3 x 24 x T, with a
    leading person axis for several people), camLoc (3x1), visible (P x 24 x T), bbox (P x 4 x T), and a moving
    camera's camK and camR (3 x 3 x T) and camT (3 x T); each axis at most that long, and exactly when `exact`.
    The rest of the file (names, cells of file names) is skipped."""
    lead = (people,) if people > 1 else ()
    shapes = {
        "joints2D": (*lead, 2, 24, frames),
        "joints3D": (*lead, 3, 24, frames),
        "camLoc": (3, 1),
        "visible": (people, 24, frames),
        "bbox": (people, 4, frames),
        "camK": (3, 3, frames),
        "camR": (3, 3, frames),
        "camT": (3, frames),
    }
    info = dict(read_mat(path, lambda name: Want(shapes[name]) if name in shapes else None))
    for name, array in info.items():
        if exact and array.shape != shapes[name]:
            raise BadClipFile(
                path, f"holds {name} of {_dims(array.shape)}, not the {_dims(shapes[name])} its spec says"
            )
    return info


def read_pass(
    path: Path, prefix: str, frames: int, width: int, height: int, exact: bool = True
) -> np.ndarray:
    """`<prefix>_1 .. <prefix>_n` of a pass file as one (n, height, width[, C]) array of the pass' type (see
    PASS_LAYOUT): no frame missing in between, none past `frames`, and n == frames when `exact`."""
    return _read_frames(path, (prefix,), frames, width, height, exact)[prefix]


def read_corr(path: Path, frames: int, width: int, height: int, exact: bool = True) -> dict[str, np.ndarray]:
    """`<name>_corr.mat` (ClipSpec.correspondence), read once: {"uv": (n, height, width, 2), "canon": (n, height,
    width, 3)} float32, each as read_pass reads a pass (bounded by the spec, no gaps, n == frames when `exact`)."""
    return _read_frames(path, CORR_PREFIXES, frames, width, height, exact)


def _read_frames(
    path: Path, prefixes: tuple[str, ...], frames: int, width: int, height: int, exact: bool
) -> dict[str, np.ndarray]:
    """read_pass for one or more prefixes stored in the same file, in one pass over it."""
    shapes = {p: ((height, width, *PASS_LAYOUT[p][0]), PASS_LAYOUT[p][1]) for p in prefixes}
    pattern = re.compile(rf"({'|'.join(map(re.escape, prefixes))})_([1-9][0-9]*)")

    def expect(name: str) -> Want | None:
        match = pattern.fullmatch(name)
        if match is None:
            return None
        if int(match[2]) > frames:
            raise BadClipFile(path, f"holds {name}, past the {frames} frames its spec says")
        shape, dtype = shapes[match[1]]
        return Want(shape, np.dtype(dtype))

    # at most what the spec says, filled frame by frame
    out: dict[str, np.ndarray] = {
        p: np.empty((frames, *shape), dtype) for p, (shape, dtype) in shapes.items()
    }
    seen: dict[str, set[int]] = {p: set() for p in prefixes}
    for name, frame in read_mat(path, expect):
        prefix, n = name.rsplit("_", 1)
        shape = shapes[prefix][0]
        if frame.shape != shape:
            raise BadClipFile(
                path, f"holds {name} of {_dims(frame.shape)}, not the {_dims(shape)} its spec says"
            )
        out[prefix][int(n) - 1] = frame
        seen[prefix].add(int(n))
    for prefix in prefixes:
        count = len(seen[prefix])
        if count == 0:
            raise BadClipFile(path, f"holds no {prefix}_<n> frames")
        if max(seen[prefix]) != count or (exact and count != frames):
            lacking = min(set(range(1, frames + 1)) - seen[prefix])
            raise BadClipFile(path, f"lacks {prefix}_{lacking} of the {frames} frames its spec says")
        out[prefix] = out[prefix][:count]
    return out


def info_cameras(path: Path, info: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A moving camera's per-frame (K (T, 3, 3), R (T, 3, 3), t (T, 3)) float64 from read_info's camK, camR and
    camT (joints2D = K_t (R_t X + t_t) / z in the clip's convention); None for a static camera (none of them).
    One or two of them, or frame counts that differ, are refused."""
    keys = ("camK", "camR", "camT")
    present = [k for k in keys if k in info]
    if not present:
        return None
    if len(present) != len(keys):
        missing = " and ".join(k for k in keys if k not in info)
        raise BadClipFile(
            path, f"holds {', '.join(present)} but lacks {missing} (a moving camera stores all three)"
        )
    for key, want in (("camK", (3, 3)), ("camR", (3, 3)), ("camT", (3,))):
        if info[key].shape[: len(want)] != want:
            raise BadClipFile(
                path, f"holds {key} of {_dims(info[key].shape)}, not the {_dims(want)}xT of a camera"
            )
    K, R = (np.asarray(info[k], np.float64).transpose(2, 0, 1) for k in ("camK", "camR"))
    t = np.asarray(info["camT"], np.float64).T
    if not len(K) == len(R) == len(t):
        raise BadClipFile(
            path, f"holds camK, camR and camT of {len(K)}, {len(R)} and {len(t)} frames, not one count"
        )
    return K, R, t
