"""Untrusted npz and image files (farm/assets/untrusted.py): an array's declared size is checked before it is
allocated, and images are opened only as the formats the farm accepts, by content (an EPS named .jpg never
reaches Ghostscript)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from farm.assets.backgrounds import load_background
from farm.assets.untrusted import open_image, read_array
from farm.core.errors import FarmError

EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 10 10
%%EndComments
newpath 0 0 moveto 10 10 lineto stroke
showpage
%%EOF
"""


def one_sentence(message: str, path: Path) -> None:
    assert str(path) in message and "\n" not in message and "Traceback" not in message, message


def npz_with_header(path: Path, key: str, shape: tuple[int, ...], data: bytes = b"\0" * 64) -> Path:
    """An .npz whose member `key` declares `shape` float64 but holds only `data`."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{key}.npy", member.getvalue() + data)
    return path


def test_arrays_read_as_numpy_reads_them(tmp_path):
    arrays = {
        "poses": np.random.default_rng(0).normal(size=(50, 72)),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        "big_endian": np.arange(5, dtype=">f4"),
        "scalar": np.array(120.0),
        "empty": np.zeros((0, 3)),
    }
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    for key, expected in arrays.items():
        got = read_array(tmp_path / "a.npz", key)
        assert (
            got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)
        ), key
        got.flat[:1] = 0  # writable, as np.load's


def test_a_huge_declared_shape_is_refused_before_allocation(tmp_path):
    path = npz_with_header(tmp_path / "motion.npz", "poses", (10**6, 10**6))  # 8 TB declared, 64 bytes held
    tracemalloc.start()
    try:
        with pytest.raises(FarmError) as caught:
            read_array(path, "poses")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    one_sentence(message, path)
    assert "declares 1000000x1000000 float64 (8,000,000,000,000 bytes), more than" in message
    assert peak < 10_000_000, peak


def test_a_declared_shape_beyond_the_members_size_or_a_cap_is_refused(tmp_path):
    path = npz_with_header(tmp_path / "motion.npz", "poses", (1000, 72))  # 576,000 bytes declared, 64 held
    with pytest.raises(FarmError, match="more than its 192-byte member"):
        read_array(path, "poses")
    np.savez(tmp_path / "b.npz", poses=np.zeros((100, 72)))
    with pytest.raises(FarmError, match=r"\(57,600 bytes\), more than .* or the 1,000 bytes allowed"):
        read_array(tmp_path / "b.npz", "poses", max_bytes=1000)


def test_an_eps_named_jpg_is_refused_without_ghostscript(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    monkeypatch.setattr(
        EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or Image.new("RGB", (1, 1))
    )
    path = tmp_path / "bg.jpg"
    path.write_bytes(EPS)
    for read in (
        lambda: open_image(path, "background", 1 << 26),
        lambda: load_background(str(path), 320, 240),
    ):
        with pytest.raises(FarmError) as caught:
            read()
        assert str(caught.value) == (
            f"the background image {path} is not a JPEG, PNG, WebP or BMP image by its content; "
            "replace it with one"
        )
    assert calls == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_the_accepted_formats_open_whatever_their_names(tmp_path, fmt):
    path = tmp_path / "texture.png"  # any name: the content decides
    Image.new("RGB", (8, 6), (10, 200, 30)).save(path, format=fmt)
    with open_image(path, "texture", 1 << 26) as image:
        assert image.format == fmt and image.size == (8, 6)
