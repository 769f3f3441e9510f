"""Safe reading of untrusted files: .npz files lazily (array headers without the data, single arrays without
pickles), and images checked whole and below a pixel cap before they are decoded (decompression bombs)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from farm.core.errors import FarmError

if TYPE_CHECKING:
    from PIL import Image as PILImage


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


def open_image(path: Path, what: str, max_pixels: int) -> PILImage.Image:
    """Open an untrusted `what` image (a background, a texture) after checking that it exists, has at most
    `max_pixels` pixels and is whole; a FarmError in one sentence otherwise.

    The pixels are decoded (so truncated data shows up here); the caller closes the image (a context manager).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FarmError(f"the {what} image {path} does not exist; check the path or import the {what}s again")
    image = None
    try:
        with Image.open(path) as probe:  # reads the header only
            w, h = probe.size
            if w * h > max_pixels:
                raise FarmError(
                    f"the {what} image {path} is {w}x{h} pixels, more than the {max_pixels:,} allowed; "
                    "scale it down and try again"
                )
            probe.verify()  # reads the whole file and checks its structure without decoding pixels
        image = Image.open(path)
        image.load()
        return image
    except FarmError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if image is not None:
            image.close()
        raise FarmError(
            f"the {what} image {path} cannot be read ({exc}); replace it with a whole JPG or PNG file"
        ) from exc
