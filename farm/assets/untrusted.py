"""Safe, lazy reading of .npz files: array headers without the data, single arrays without pickles."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from farm.core.errors import FarmError


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FarmError(f"{path} does not exist or is not a file; check the path")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FarmError(
            f"{path} is not a readable .npz file ({exc}); check that the download is complete"
        ) from exc


def array_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an .npz, reading only each member's header.

    This is how a 2.5 GB smpl_data.npz is catalogued without holding it in memory.
    """
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with _open_zip(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            try:
                with archive.open(member) as stream:
                    major, _minor = np.lib.format.read_magic(stream)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if major == 1
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read_header(stream)
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                raise FarmError(
                    f"{path} has a corrupt array {member!r} ({exc}); re-download the file"
                ) from exc
            if dtype.hasobject:
                raise FarmError(
                    f"{path} holds Python objects in {member!r}; only numeric arrays are accepted"
                )
            headers[member[: -len(".npy")]] = (shape, dtype)
    return headers


def read_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz, never unpickling anything."""
    with _open_zip(path) as archive:
        try:
            with archive.open(f"{key}.npy") as stream:
                return np.lib.format.read_array(stream, allow_pickle=False)
        except KeyError as exc:
            raise FarmError(
                f"{path} has no array {key!r}; was it re-exported since it was imported?"
            ) from exc
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FarmError(f"{path}: cannot read the array {key!r} ({exc}); re-download the file") from exc
