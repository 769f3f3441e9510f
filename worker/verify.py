"""`farm verify`: every finished clip's objects must be in storage with the size and sha256 recorded for them.

Clip.checksums maps each object's key (relative to the storage root, e.g.
`cmu/train/run0/01_01/01_01_c0001.mp4`) to {"sha256": hex, "size": bytes}. A deep check downloads and
re-hashes every object (it finds corruption); a quick one compares the size and sha256 stored with the object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.core.errors import FarmError
from farm.core.models import Clip, ClipStatus
from farm.core.storage import SHA256_HEX, Storage, check_key

CLIPS_PER_BATCH = 200  # rows held in memory at once; objects of a batch are checked in parallel


@dataclass
class VerifyReport:
    checked: int = 0  # clips
    objects: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (clip name, key)
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # (clip name, key, why)

    @property
    def clean(self) -> bool:
        return not self.missing and not self.corrupt

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "objects": self.objects,
            "clean": self.clean,
            "missing": [{"clip": c, "key": k} for c, k in self.missing],
            "corrupt": [{"clip": c, "key": k, "why": why} for c, k, why in self.corrupt],
        }


def check_object(storage: Storage, key: str, recorded: Any, deep: bool) -> str | None:
    """None if the object is intact, "missing" if absent, else why it is corrupt."""
    if not (
        isinstance(recorded, dict)
        and isinstance(recorded.get("sha256"), str)
        and SHA256_HEX.fullmatch(recorded["sha256"])
        and isinstance(recorded.get("size"), int)
    ):
        return "its recorded checksum is malformed (want {'sha256': hex, 'size': bytes})"
    try:
        check_key(key)
    except FarmError:
        return "its key is not a plain relative path"
    info = storage.hash(key) if deep else storage.stat(key)
    if info is not None and info.sha256 is None:
        info = storage.hash(key)  # written by another tool without a stored sha256: hash the content
    if info is None:
        return "missing"
    if info.size != recorded["size"]:
        return f"size {info.size} bytes, recorded {recorded['size']}"
    if info.sha256 != recorded["sha256"]:
        return f"sha256 {info.sha256[:12]}…, recorded {recorded['sha256'][:12]}…"  # type: ignore[index]
    return None


def _done_clips(session: Session) -> Iterator[list[tuple[str, Any]]]:
    query = (
        select(Clip.name, Clip.checksums)
        .where(Clip.status == ClipStatus.DONE)
        .order_by(Clip.id)
        .execution_options(yield_per=CLIPS_PER_BATCH)
    )
    for batch in session.execute(query).partitions():
        yield [(name, checksums) for name, checksums in batch]


def verify_clips(
    session: Session,
    storage: Storage,
    deep: bool = True,
    progress: Callable[[int, int], None] | None = None,
    threads: int = 8,
) -> VerifyReport:
    """Check every done clip's objects; progress(clips checked, clips in all) is called after each batch."""
    total = session.scalar(select(func.count()).select_from(Clip).where(Clip.status == ClipStatus.DONE)) or 0
    report = VerifyReport()
    if progress:
        progress(0, total)
    # Storage calls wait on the network (or disk), so threads overlap them well.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for clips in _done_clips(session):
            objects: list[tuple[str, str, Any]] = []
            for name, checksums in clips:
                if not isinstance(checksums, dict) or not checksums:
                    report.corrupt.append((name, "", "a done clip with no recorded checksums"))
                    continue
                objects += [(name, key, recorded) for key, recorded in sorted(checksums.items())]
            results = pool.map(lambda o: check_object(storage, o[1], o[2], deep), objects)
            for (name, key, _), problem in zip(objects, results, strict=True):
                if problem == "missing":
                    report.missing.append((name, key))
                elif problem is not None:
                    report.corrupt.append((name, key, problem))
            report.checked += len(clips)
            report.objects += len(objects)
            if progress:
                progress(report.checked, total)
    return report
