"""Procedural and user backgrounds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from farm.assets.backgrounds import BUILTIN_BACKGROUNDS, builtin_background_uris, load_background
from farm.core.errors import FarmError


def test_pools_are_disjoint_and_sized() -> None:
    train, test = builtin_background_uris("train"), builtin_background_uris("test")
    assert (
        (len(train), len(test)) == (BUILTIN_BACKGROUNDS["train"], BUILTIN_BACKGROUNDS["test"]) == (400, 100)
    )
    assert not set(train) & set(test)
    assert train[0] == "builtin:background/train/0000"


def test_builtin_is_deterministic_sized_and_varied() -> None:
    uris = builtin_background_uris("train")[:3] + builtin_background_uris("test")[:1]
    images = [load_background(u, 320, 240) for u in uris]
    for image in images:
        assert image.shape == (240, 320, 3) and image.dtype == np.uint8
        assert image.std() > 10  # not a flat colour
    again = load_background(uris[0], 320, 240)
    assert hashlib.sha256(again.tobytes()).digest() == hashlib.sha256(images[0].tobytes()).digest()
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            assert np.abs(images[a].astype(int) - images[b].astype(int)).mean() > 10


def test_builtin_at_another_size_is_the_same_room() -> None:
    uri = builtin_background_uris("test")[7]
    small = load_background(uri, 320, 240)
    large = load_background(uri, 480, 360)
    assert large.shape == (360, 480, 3)
    shrunk = np.asarray(Image.fromarray(large).resize((320, 240), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(shrunk - small.astype(int)).mean() < 12


@pytest.mark.parametrize("uri", ["builtin:background/train/0400", "builtin:background/val/0001", "builtin:x"])
def test_unknown_builtin_is_a_farm_error(uri: str) -> None:
    with pytest.raises(FarmError):
        load_background(uri, 320, 240)


def test_user_image_is_scaled_to_cover_and_centre_cropped(tmp_path: Path) -> None:
    # A wide image: left third red, middle third green, right third blue.
    wide = np.zeros((200, 600, 3), dtype=np.uint8)
    wide[:, :200, 0] = 255
    wide[:, 200:400, 1] = 255
    wide[:, 400:, 2] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    out = load_background(str(path), 320, 240)
    assert out.shape == (240, 320, 3)
    # Scaled to 240 rows (720 wide), then the middle 320 columns: mostly green, a little red and blue at the edges.
    assert (out[:, 40:280, 1] > 200).all()
    assert out[:, :20, 0].mean() > 200 and out[:, -20:, 2].mean() > 200


def test_small_jpeg_is_scaled_up(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    Image.fromarray(np.full((30, 40, 3), 128, dtype=np.uint8)).save(path, quality=95)
    out = load_background(str(path), 320, 240)
    assert out.shape == (240, 320, 3) and abs(float(out.mean()) - 128) < 3


def test_corrupt_or_missing_image_is_a_farm_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    for path in (truncated, garbage, tmp_path / "missing.png"):
        with pytest.raises(FarmError, match=path.name):
            load_background(str(path), 320, 240)
