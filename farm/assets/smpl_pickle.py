"""A restricted unpickler for the SMPL model files users bring: `.pkl` of every public release, chumpy or not.

A pickle is a small program: GLOBAL names an object, REDUCE and NEWOBJ call it, BUILD sets attributes on
what they made. So the stream is never handed a real class or function of this process. Each name it may
use resolves to a stand-in of this module: builders that make fresh numpy arrays (their declared size
checked against MAX_ARRAY_BYTES before anything is allocated), and record classes for chumpy arrays
and scipy sparse matrices, which only keep their pickled state. After loading, records are rebuilt into
plain numpy arrays and real sparse matrices from that state, so nothing the pickle built survives but data.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from farm.core.errors import FarmError

SMPL_URL = "https://smpl.is.tue.mpg.de"
MAX_ARRAY_BYTES = 1 << 30  # per array; SMPL's largest (posedirs, 6890x3x207 float64) is 34 MB
MAX_FILE_BYTES = 4 << 30  # SMPL-X and SMPL+H pickles are a few hundred MB


class _Refused(pickle.UnpicklingError):
    """The stream asked for something that is not array data."""


class _KeepState:
    """BUILD's `__setstate__`: on a record it keeps the state; asked of a record class (BUILD on the class
    itself, which would set class attributes) it refuses."""

    def __get__(self, record: Any, cls: type) -> Callable[[Any], None]:
        if record is None:
            raise _Refused(f"sets attributes on the class {cls.__name__}")
        return lambda state: setattr(record, "state", state)


class _Record:
    """A pickled object of an allowed class, reduced to the state the pickle gave it."""

    kind = ""
    __setstate__ = _KeepState()


class _ChumpyRecord(_Record):
    kind = "chumpy"  # chumpy.ch.Ch: its __dict__, with the array under 'x'


class _CscRecord(_Record):
    kind = "csc"


class _CsrRecord(_Record):
    kind = "csr"


class _Stand:
    """A name the stream may use, standing for a builder (callable) or a type it may only pass around."""

    __slots__ = ("name", "build")

    def __init__(self, name: str, build: Callable[..., Any] | None = None) -> None:
        self.name, self.build = name, build

    def __call__(self, *args: Any) -> Any:
        if self.build is None:
            raise _Refused(f"calls {self.name}")
        return self.build(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"sets attributes on {self.name}")


_NDARRAY = _Stand("numpy.ndarray")
_OBJECT = _Stand("object")


def _check_size(shape: Any, dtype: Any) -> None:
    count = math.prod(int(n) for n in (shape if isinstance(shape, tuple | list) else (shape,)))
    if count < 0 or count * np.dtype(dtype).itemsize > MAX_ARRAY_BYTES:
        raise _Refused(f"declares an array of {count:,} x {np.dtype(dtype)} elements, over the size cap")


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's own pickles: an empty array of the pickled type, filled by BUILD from the file's bytes."""
    if cls is not _NDARRAY:
        raise _Refused("rebuilds an array of a class other than numpy.ndarray")
    _check_size(shape, np.uint8)
    return np.core.multiarray._reconstruct(np.ndarray, shape, typecode)  # type: ignore[attr-defined, no-any-return]


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:
        raise _Refused("declares an array of Python objects")
    _check_size(1, dtype)
    return dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("makes a numpy scalar that is not a number")
    return np.core.multiarray.scalar(dtype, data)  # type: ignore[attr-defined]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _check_size(shape, dtype)
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles of protocol 2 rebuild bytes (array buffers) with _codecs.encode(text, 'latin1')."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"decodes bytes as {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> _Record:
    """copyreg._reconstructor, as protocols 0 and 1 make plain objects: only records, only from object."""
    if not (isinstance(cls, type) and issubclass(cls, _Record)) or base is not _OBJECT or state is not None:
        raise _Refused("rebuilds an object that is not array data")
    return cls()


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Stand("numpy.dtype", _dtype),
        ("chumpy.ch", "Ch"): _ChumpyRecord,
        ("_codecs", "encode"): _Stand("_codecs.encode", _latin1_bytes),
    }
    for module in ("copy_reg", "copyreg"):
        allowed[(module, "_reconstructor")] = _Stand("copyreg._reconstructor", _reconstructor)
    for module in ("__builtin__", "builtins"):
        allowed[(module, "object")] = _OBJECT
        allowed[(module, "set")] = _Stand("set", lambda items=(): set(items))  # chumpy's dirty variables
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Stand("numpy _reconstruct", _reconstruct)
        allowed[(f"{core}.multiarray", "scalar")] = _Stand("numpy scalar", _scalar)
        allowed[(f"{core}.numeric", "_frombuffer")] = _Stand("numpy _frombuffer", _frombuffer)
    for module in ("scipy.sparse.csc", "scipy.sparse._csc"):
        allowed[(module, "csc_matrix")] = _CscRecord
    for module in ("scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csr_matrix")] = _CsrRecord
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._names = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        found = self._names.get((module, name))
        if found is None:
            raise FarmError(
                f"the SMPL file {self._path} contains {module}.{name}, which is not array data: refusing to load "
                f"it; use an official SMPL file from {SMPL_URL}"
            )
        return found


def _plain(value: Any, path: Path) -> Any:
    """Records become numpy arrays or real sparse matrices built from their arrays; arrays are size-checked."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise _Refused("holds an array of Python objects")
        if value.nbytes > MAX_ARRAY_BYTES:
            raise _Refused(f"holds an array of {value.nbytes:,} bytes, over the size cap")
        return value
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, path) for v in value)
    if not isinstance(value, _Record):
        return value
    state = getattr(value, "state", None)
    if value.kind == "chumpy":
        if not isinstance(state, dict) or "x" not in state:
            raise FarmError(
                f"the SMPL file {path} holds a chumpy object without an array: use a v1.1.0 SMPL file"
            )
        return np.asarray(_plain(state["x"], path))
    import scipy.sparse

    if not isinstance(state, dict) or not {"data", "indices", "indptr", "_shape"} <= state.keys():
        raise FarmError(
            f"the SMPL file {path} holds a sparse matrix without its arrays: use an official SMPL file"
        )
    parts = [np.asarray(_plain(state[k], path)) for k in ("data", "indices", "indptr")]
    matrix = scipy.sparse.csc_matrix if value.kind == "csc" else scipy.sparse.csr_matrix
    try:
        return matrix(tuple(parts), shape=tuple(int(n) for n in state["_shape"]))
    except (TypeError, ValueError) as exc:
        raise FarmError(
            f"the SMPL file {path} holds a malformed sparse matrix ({exc}): use an official SMPL file"
        ) from exc


def read_smpl_pickle(path: Path) -> dict[str, Any]:
    """A SMPL .pkl's dict with chumpy arrays replaced by numpy arrays, read without importing chumpy."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FarmError(
            f"the SMPL file {path} is {size:,} bytes, more than the {MAX_FILE_BYTES:,} any SMPL model needs: "
            f"refusing to load it; use an official SMPL file from {SMPL_URL}"
        )
    with open(path, "rb") as fh:
        try:
            data = _ArraysOnlyUnpickler(fh, path).load()
            if not isinstance(data, dict):
                raise FarmError(
                    f"the SMPL file {path} does not hold a dict of arrays: use an official SMPL file"
                )
            return {str(k): _plain(v, path) for k, v in data.items()}
        except FarmError:
            raise
        except _Refused as exc:
            raise FarmError(
                f"the SMPL file {path} {exc}, which is not array data: refusing to load it; "
                f"use an official SMPL file from {SMPL_URL}"
            ) from None
        except Exception as exc:  # a truncated or foreign pickle: say which file
            raise FarmError(
                f"cannot read the SMPL file {path} ({exc}): download it again from {SMPL_URL}"
            ) from exc
