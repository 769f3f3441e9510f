"""Asset imports stay inside what the user named: list entries that are absolute or climb out with '..', and
folder links leading out of the scanned folder, are refused in one sentence, so no file lands in both the
train and the test pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from farm.core.errors import FarmError
from farm.core.settings import get_settings
from scheduler.assets import import_backgrounds, import_surreal_textures


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    monkeypatch.setenv("FARM_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def registered(url: str) -> list[str]:
    from farm.core.db import session_scope
    from farm.core.models import Asset

    with session_scope(url) as session:
        return list(session.scalars(select(Asset.uri)))


def image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 48, 3), value, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("entry", ["../test/x.jpg", "imgs/../../test/x.jpg", "/etc/passwd", "ABSOLUTE"])
def test_a_list_entry_outside_the_list_folder_is_refused(tmp_path: Path, database: str, entry: str) -> None:
    image(tmp_path / "train" / "imgs" / "a.jpg")
    target = image(tmp_path / "test" / "x.jpg", 50)
    import_backgrounds(database, tmp_path / "test", "test")
    entry = str(target) if entry == "ABSOLUTE" else entry
    listing = tmp_path / "train" / "train_img.txt"
    listing.write_text(f"imgs/a.jpg\n{entry}\n")
    with pytest.raises(FarmError) as refused:
        import_backgrounds(database, listing, "train")
    sentence = str(refused.value)
    assert sentence.startswith(f"line 2 of {listing} is {entry!r}, which is absolute or climbs out with '..'")
    assert "\n" not in sentence
    assert registered(database) == [str(target.resolve())]  # nothing of the train list written


def test_texture_lists_refuse_climbing_entries_too(tmp_path: Path, database: str) -> None:
    root = tmp_path / "smpl_data"
    for gender in ("female", "male"):
        for split in ("train", "test"):
            entry = f"textures/{gender}/{split}.jpg"
            image(root / entry)
            (root / "textures" / f"{gender}_{split}.txt").write_text(entry + "\n")
    (root / "textures" / "male_test.txt").write_text("textures/male/../../../elsewhere.jpg\n")
    with pytest.raises(FarmError, match=r"line 1 of .*male_test.txt is .* climbs out with '\.\.'"):
        import_surreal_textures(database, root)
    assert registered(database) == []


def test_a_folder_scan_does_not_follow_links_out_of_the_folder(tmp_path: Path, database: str) -> None:
    """The test pool is imported; a link to it (a folder or one file) inside the train folder is refused, not
    followed, so no test image becomes a train image as well. Links that stay inside the folder are fine."""
    test_image = image(tmp_path / "test" / "t.jpg", 50)
    import_backgrounds(database, tmp_path / "test", "test")
    train = tmp_path / "train"
    image(train / "kitchen" / "a.jpg")
    (train / "same").symlink_to(train / "kitchen", target_is_directory=True)  # inside: skipped, no error
    (train / "b.jpg").symlink_to(train / "kitchen" / "a.jpg")  # inside: the same file, registered once
    assert import_backgrounds(database, train, "train").added == 1

    (train / "borrowed").symlink_to(tmp_path / "test", target_is_directory=True)
    with pytest.raises(FarmError) as refused:
        import_backgrounds(database, train, "train")
    assert str(refused.value).startswith(
        f"{train / 'borrowed'} is a link to {(tmp_path / 'test').resolve()}, outside"
    )
    (train / "borrowed").unlink()
    (train / "one.jpg").symlink_to(test_image)
    with pytest.raises(FarmError, match="is a link to .*t.jpg, outside the folder"):
        import_backgrounds(database, train, "train")
    assert sorted(registered(database)) == sorted(
        [str(test_image.resolve()), str((train / "kitchen" / "a.jpg").resolve())]
    )
