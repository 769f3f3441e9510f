"""Local files: their sha256, and writes that land whole or not at all.

`atomic_write(dest)` (or `atomic_path(dest)` for a writer that wants a path) fills a temp file in dest's folder
and renames it over dest only when the block ends without an error, so a reader never sees a partial file and
a crash leaves dest as it was. With `durable=True` the data and the rename are fsynced before it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file, read in chunks."""
    return file_digest(path)[0]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide the dataset from its users


@contextlib.contextmanager
def temp_beside(dest: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temp file in dest's folder (so the final rename is atomic); removed unless renamed into place."""
    if (
        not dest.parent.is_dir()
    ):  # mkdir locks the parent folder even when it exists: busy workers queue on it
        dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, temp
    finally:
        temp.unlink(missing_ok=True)


def seal(f: IO[bytes], durable: bool = True) -> None:
    """Ready a written temp file for publishing: flushed, with open()'s mode, and (durable) on the disk."""
    f.flush()
    os.fchmod(f.fileno(), FILE_MODE)
    if durable:
        os.fsync(f.fileno())


def sync_folder(folder: Path) -> None:
    """Make renames into the folder durable: a crash right after must not lose the entry."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def publish(temp: Path, dest: Path, durable: bool) -> None:
    """Rename a sealed temp file over dest; with `durable`, the rename itself survives a crash too."""
    os.replace(temp, dest)
    if durable:
        sync_folder(dest.parent)


@contextlib.contextmanager
def atomic_write(dest: Path, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary file to write; it replaces dest when the block ends without an error, else it is removed."""
    dest = Path(dest)
    with temp_beside(dest) as (f, temp):
        yield f
        seal(f, durable)
        publish(temp, dest, durable)


@contextlib.contextmanager
def atomic_path(dest: Path, durable: bool = True) -> Iterator[Path]:
    """atomic_write for writers that take a path: the temp file's path, renamed over dest as atomic_write's."""
    dest = Path(dest)
    with temp_beside(dest) as (f, temp):
        f.close()
        yield temp
        with open(temp, "rb") as written:  # the writer may have replaced the temp file: seal what is there
            seal(written, durable)
        publish(temp, dest, durable)
