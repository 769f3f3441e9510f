"""Register users' own appearance assets: background photos (LSUN-style) and SURREAL's clothing textures.

Every image is opened and checked, and its sha256 taken, before anything is written; the rows then go in
one transaction. Registering a file that is already registered (same kind and absolute path) changes nothing.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from farm.core.errors import FarmError
from farm.core.files import sha256_file
from farm.core.spec import Gender, Split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLITS: tuple[Split, ...] = ("train", "test")
GENDERS: tuple[Gender, ...] = ("female", "male")


@dataclass(frozen=True)
class NewAsset:
    kind: str  # background or texture
    split: Split
    gender: Gender | None
    path: Path  # absolute


@dataclass(frozen=True)
class AssetImportResult:
    kind: str
    found: dict[str, int]  # files per group: "train", or "female/train" for textures
    added: int
    already: int  # registered before, left as they were


def background_files(source: Path, split: Split) -> list[NewAsset]:
    """Images under a folder (recursively), or the paths in a list file, one per line, relative to it."""
    if split not in SPLITS:
        raise FarmError(f"--split {split!r} must be train or test")
    if source.is_dir():
        paths = [p for p in _files_under(source) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not paths:
            raise FarmError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the folder")
    elif source.is_file():
        paths = _read_list(source, source.parent)
        if not paths:
            raise FarmError(f"the list file {source} names no images; write one image path per line")
    else:
        raise FarmError(
            f"{source} does not exist; give a folder of images or a list file with one path a line"
        )
    return [NewAsset("background", split, None, p.resolve()) for p in paths]


def surreal_texture_files(root: Path) -> list[NewAsset]:
    """SURREAL's clothing textures: `textures/{female,male}_{train,test}.txt` under `root` (SURREAL's
    `smpl_data` folder), each line an image path relative to `root`, e.g.
    textures/female/nongrey_female_0001.jpg."""
    base = root
    if not (root / "textures").is_dir() and root.name == "textures":
        base = root.parent  # the user pointed at the textures folder itself
    lists = {(g, s): base / "textures" / f"{g}_{s}.txt" for g in GENDERS for s in SPLITS}
    missing = [str(p) for p in lists.values() if not p.is_file()]
    if missing:
        raise FarmError(
            f"{root} is not a SURREAL texture folder: {', '.join(missing)} is missing; "
            "point at SURREAL's smpl_data folder, which holds textures/{female,male}_{train,test}.txt"
        )
    out = []
    for (gender, split), list_file in lists.items():
        out += [NewAsset("texture", split, gender, p.resolve()) for p in _read_list(list_file, base)]
    return out


def _files_under(folder: Path) -> list[Path]:
    """Every file under the folder, in order, without following links out of it: a link to another folder
    (the test images, say) would put one file in both pools, so such a link is refused in one sentence."""
    root = folder.resolve()
    found = []
    for top, dirs, files in os.walk(folder):  # os.walk does not descend into linked folders
        for path in (Path(top) / name for name in dirs + files):
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise FarmError(
                    f"{path} is a link to {path.resolve()}, outside the folder {folder}; copy the files in "
                    "or import that folder by itself, so that no file lands in two pools"
                )
        found += [Path(top) / name for name in files if (Path(top) / name).is_file()]
    return sorted(found)


def _read_list(list_file: Path, base: Path) -> list[Path]:
    paths = []
    for number, line in enumerate(list_file.read_text(errors="replace").splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if Path(entry).is_absolute() or ".." in Path(entry).parts:
            # Entries are relative to the list's folder; one reaching outside could name the other pool's files.
            raise FarmError(
                f"line {number} of {list_file} is {entry!r}, which is absolute or climbs out with '..'; "
                f"list files by their path relative to {base}"
            )
        path = base / entry
        if not path.is_file():
            raise FarmError(
                f"{path} (line {number} of {list_file}) does not exist; fix the list or put the file there"
            )
        paths.append(path)
    return paths


def _checked(assets: list[NewAsset]) -> dict[Path, str]:
    """sha256 of every file, after making sure each one is a whole, readable image of a sane size."""
    from farm.assets.backgrounds import MAX_IMAGE_PIXELS
    from farm.assets.untrusted import open_image

    checksums = {}
    for asset in assets:
        with open_image(asset.path, asset.kind, MAX_IMAGE_PIXELS):  # textures too, as before: 64 Mpx
            pass
        checksums[asset.path] = sha256_file(asset.path)
    return checksums


def register_assets(database_url: str, assets: list[NewAsset]) -> AssetImportResult:
    """Check every file, then add the ones not yet registered, all in one transaction."""
    from farm.core.db import session_scope
    from farm.core.models import Asset

    if not assets:
        raise FarmError("no assets to register")
    kinds = {a.kind for a in assets}
    if len(kinds) != 1:
        raise FarmError(f"register one kind of asset at a time, not {sorted(kinds)}")
    kind = kinds.pop()
    by_uri: dict[str, NewAsset] = {}
    for asset in assets:  # a file listed twice counts once, but only within one split and gender
        first = by_uri.setdefault(str(asset.path), asset)
        if (first.split, first.gender) != (asset.split, asset.gender):
            raise FarmError(
                f"{asset.path} is listed for both {_group(first.split, first.gender)} and "
                f"{_group(asset.split, asset.gender)}; train and test must not share files, so list it once"
            )
    checksums = _checked(list(by_uri.values()))
    added = already = 0
    with session_scope(database_url) as session:
        existing = {
            row.uri: row
            for row in session.scalars(select(Asset).where(Asset.kind == kind, Asset.uri.in_(by_uri)))
        }
        for uri, asset in by_uri.items():
            row = existing.get(uri)
            if row is not None:
                if (row.split, row.gender) != (asset.split, asset.gender):
                    # Train and test must stay disjoint, so one file cannot move between them silently.
                    raise FarmError(
                        f"{uri} is already registered as a {row.kind} for {_group(row.split, row.gender)}; "
                        f"it cannot also be {_group(asset.split, asset.gender)}; list it in one place only"
                    )
                already += 1
                continue
            session.add(
                Asset(
                    kind=kind, split=asset.split, gender=asset.gender, uri=uri, checksum=checksums[asset.path]
                )
            )
            added += 1
    found = Counter(_group(a.split, a.gender) for a in by_uri.values())
    return AssetImportResult(kind, dict(sorted(found.items())), added, already)


def _group(split: str | None, gender: str | None) -> str:
    return f"{gender}/{split}" if gender else str(split)


def import_backgrounds(database_url: str, source: Path, split: Split) -> AssetImportResult:
    return register_assets(database_url, background_files(source, split))


def import_surreal_textures(database_url: str, root: Path) -> AssetImportResult:
    return register_assets(database_url, surreal_texture_files(root))
