"""Safe reading of untrusted files: .npz files lazily (array headers without the data, single arrays without
pickles and below a size cap), and images of the accepted formats only, checked whole and below a pixel cap
before they are decoded (decompression bombs)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from farm.core.errors import FarmError

if TYPE_CHECKING:
    from PIL import Image as PILImage

# An array read from an .npz is at most this large (SURREAL's longest pose array, 22,948 frames x 72 float64,
# is 13 MB): a header may declare any size, and numpy allocates it before reading the data.
MAX_ARRAY_BYTES = 1 << 30
# What PIL may open an untrusted image as, decided by its content (scheduler/assets.py's IMAGE_SUFFIXES): an EPS
# named .jpg would otherwise be opened as EPS, which runs Ghostscript where it is installed.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


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


def read_array(path: Path, key: str, max_bytes: int = MAX_ARRAY_BYTES) -> np.ndarray:
    """One array of an .npz, never unpickling anything, and never allocating more than `max_bytes`: numpy's
    reader allocates whatever the member's header declares before reading a byte of data, so the declared
    size is checked first (against the cap and the member's own size) and the data read into that array."""
    with _open_zip(path) as archive:
        try:
            member = archive.getinfo(f"{key}.npy")
        except KeyError as exc:
            raise FarmError(
                f"{path} has no array {key!r}; was it re-exported since it was imported?"
            ) from exc
        try:
            with archive.open(member) as stream:
                major, _minor = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(stream)
                if dtype.hasobject:
                    raise FarmError(
                        f"{path} holds Python objects in {key!r}; only numeric arrays are accepted"
                    )
                declared = math.prod(shape) * dtype.itemsize
                if declared > min(max_bytes, member.file_size):
                    raise FarmError(
                        f"{path}: the array {key!r} declares {'x'.join(map(str, shape))} {dtype} "
                        f"({declared:,} bytes), more than its {member.file_size:,}-byte member or the "
                        f"{max_bytes:,} bytes allowed; re-export the file"
                    )
                array = np.empty(shape, dtype, order="F" if fortran else "C")
                data = array.reshape(-1, order="A").view(np.uint8) if declared else None  # its bytes
                done = 0
                while data is not None and done < declared:
                    chunk = stream.read(min(declared - done, 1 << 20))
                    if not chunk:
                        raise EOFError(f"the data ends after {done:,} of {declared:,} bytes")
                    data[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                    done += len(chunk)
                return array
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
        with Image.open(path, formats=IMAGE_FORMATS) as probe:  # reads the header only
            w, h = probe.size
            if w * h > max_pixels:
                raise FarmError(
                    f"the {what} image {path} is {w}x{h} pixels, more than the {max_pixels:,} allowed; "
                    "scale it down and try again"
                )
            probe.verify()  # reads the whole file and checks its structure without decoding pixels
        image = Image.open(path, formats=IMAGE_FORMATS)
        image.load()
        return image
    except FarmError:
        raise
    except UnidentifiedImageError:
        raise FarmError(
            f"the {what} image {path} is not a JPEG, PNG, WebP or BMP image by its content; replace it with one"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if image is not None:
            image.close()
        raise FarmError(
            f"the {what} image {path} cannot be read ({exc}); replace it with a whole JPG or PNG file"
        ) from exc
