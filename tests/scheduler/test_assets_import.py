"""Registering users' backgrounds and SURREAL textures in the assets table."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

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


def rows(url: str) -> list[tuple[str, str | None, str | None, str, str | None]]:
    from farm.core.db import session_scope
    from farm.core.models import Asset

    with session_scope(url) as session:
        return [(a.kind, a.split, a.gender, a.uri, a.checksum) for a in session.scalars(select(Asset))]


def image(path: Path, size: tuple[int, int] = (48, 32), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_background_folder_registers_once_with_checksums(tmp_path: Path, database: str) -> None:
    folder = tmp_path / "lsun"
    files = [
        image(folder / "bedroom" / "a.jpg", (640, 480), 10),
        image(folder / "kitchen" / "b.png", (300, 500), 20),
        image(folder / "c.webp", (100, 100), 30),
    ]
    (folder / "notes.txt").write_text("not an image, ignored")
    result = import_backgrounds(database, folder, "train")
    assert (result.added, result.already, result.found) == (3, 0, {"train": 3})
    registered = {
        uri: (kind, split, gender, checksum) for kind, split, gender, uri, checksum in rows(database)
    }
    assert registered == {str(f.resolve()): ("background", "train", None, sha256(f)) for f in files}

    again = import_backgrounds(database, folder, "train")
    assert (again.added, again.already) == (0, 3)
    assert len(rows(database)) == 3


def test_background_list_file_is_relative_to_itself(tmp_path: Path, database: str) -> None:
    image(tmp_path / "imgs" / "x.jpg")
    image(tmp_path / "imgs" / "y.jpg", value=50)
    listing = tmp_path / "test_img.txt"
    listing.write_text("imgs/x.jpg\n\nimgs/y.jpg\r\n")
    result = import_backgrounds(database, listing, "test")
    assert result.added == 2
    assert {r[3] for r in rows(database)} == {
        str((tmp_path / "imgs" / n).resolve()) for n in ("x.jpg", "y.jpg")
    }


def test_a_broken_image_aborts_with_nothing_written(tmp_path: Path, database: str) -> None:
    folder = tmp_path / "bg"
    image(folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(FarmError, match="broken.jpg"):
        import_backgrounds(database, folder, "train")
    assert rows(database) == []


def test_a_file_cannot_be_in_both_splits(tmp_path: Path, database: str) -> None:
    image(tmp_path / "bg" / "a.jpg")
    import_backgrounds(database, tmp_path / "bg", "train")
    with pytest.raises(FarmError, match="train"):
        import_backgrounds(database, tmp_path / "bg", "test")
    assert [r[1] for r in rows(database)] == ["train"]


def surreal_textures(root: Path) -> dict[tuple[str, str], list[str]]:
    """A small copy of SURREAL's layout: smpl_data/textures/{female,male}_{train,test}.txt and the JPGs."""
    lists: dict[tuple[str, str], list[str]] = {}
    number = 0
    for gender in ("female", "male"):
        for split, count in (("train", 3), ("test", 1)):
            entries = []
            for _ in range(count):
                number += 1
                kind = "grey" if number % 4 == 0 else "nongrey"
                entry = f"textures/{gender}/{kind}_{gender}_{number:04d}.jpg"
                image(root / entry, (64, 64), number * 10)
                entries.append(entry)
            (root / "textures" / f"{gender}_{split}.txt").write_text("\n".join(entries) + "\n")
            lists[(gender, split)] = entries
    return lists


def test_surreal_textures_register_by_gender_and_split(tmp_path: Path, database: str) -> None:
    root = tmp_path / "smpl_data"
    lists = surreal_textures(root)
    result = import_surreal_textures(database, root)
    assert result.found == {"female/test": 1, "female/train": 3, "male/test": 1, "male/train": 3}
    assert result.added == 8
    registered = {(r[2], r[1], r[3], r[4]) for r in rows(database)}
    expected = {
        (g, s, str((root / e).resolve()), sha256(root / e))
        for (g, s), entries in lists.items()
        for e in entries
    }
    assert registered == expected
    # Pointing at the textures folder itself works too, and changes nothing the second time.
    assert import_surreal_textures(database, root / "textures").added == 0


def test_missing_texture_names_the_file_and_writes_nothing(tmp_path: Path, database: str) -> None:
    root = tmp_path / "smpl_data"
    lists = surreal_textures(root)
    (root / lists[("male", "test")][0]).unlink()
    with pytest.raises(FarmError, match=Path(lists[("male", "test")][0]).name):
        import_surreal_textures(database, root)
    assert rows(database) == []


def test_a_folder_without_lists_is_a_farm_error(tmp_path: Path, database: str) -> None:
    with pytest.raises(FarmError, match="female_train.txt"):
        import_surreal_textures(database, tmp_path)


def test_cli_imports_and_prints_counts(tmp_path: Path, database: str) -> None:
    from farm.cli.assets import app

    image(tmp_path / "bg" / "a.jpg")
    image(tmp_path / "bg" / "b.jpg", value=7)
    runner = CliRunner()
    first = runner.invoke(app, ["import", "backgrounds", str(tmp_path / "bg"), "--split", "train"])
    assert first.exit_code == 0, first.output
    assert "added 2" in first.output
    second = runner.invoke(app, ["import", "backgrounds", str(tmp_path / "bg"), "--split", "train"])
    assert "added 0, already registered 2" in second.output

    surreal_textures(tmp_path / "smpl_data")
    textures = runner.invoke(app, ["import", "textures", str(tmp_path / "smpl_data")])
    assert textures.exit_code == 0, textures.output
    assert "added 8" in textures.output

    bad = runner.invoke(app, ["import", "backgrounds", str(tmp_path / "bg"), "--split", "val"])
    assert bad.exit_code == 2 and "'--split'" in bad.output  # a choice: click refuses it as bad usage
    assert len(rows(database)) == 10
