"""Catalog import: register MoCap sequences (SURREAL smpl_data.npz, AMASS folders, the built-in library)."""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from farm.assets.untrusted import array_headers, read_array
from farm.core.db import utcnow
from farm.core.errors import FarmError
from farm.core.models import Asset, Catalog, Clip, Sequence
from farm.core.spec import Split, check_safe_name
from scheduler.plan import frames_at_30fps

SURREAL_RATE = 120.0


@lru_cache
def surreal_subject_splits() -> dict[int, Split]:
    """SURREAL's split of the CMU subjects (115 train, 30 test), shipped with the package."""
    splits: dict[int, Split] = {}
    for split in ("train", "test"):
        text = resources.files("scheduler").joinpath(f"data/split_subjects_{split}.txt").read_text()
        splits.update({int(s): split for s in text.split()})
    return splits


def split_for_subject(subject: str) -> Split:
    """SURREAL's split for CMU subjects; any other subject goes to test with a stable 1-in-5 chance."""
    if subject.isdigit() and int(subject) in surreal_subject_splits():
        return surreal_subject_splits()[int(subject)]
    return "test" if zlib.crc32(subject.encode()) % 5 == 0 else "train"


def subject_of(sequence: str) -> str:
    """The CMU subject of a sequence name: '01_01' -> '01', 'ung_07_01' -> '07'."""
    for part in sequence.split("_"):
        if part.isdigit():
            return part
    return sequence.split("_")[0]


@dataclass(frozen=True)
class NewSequence:
    name: str
    subject: str
    split: Split
    mocap_frames: int
    mocap_rate: float
    motion_uri: str
    pose_key: str
    trans_key: str

    def row(self, catalog_id: int) -> dict[str, Any]:
        return {"catalog_id": catalog_id, **self.__dict__}


@dataclass(frozen=True)
class ImportResult:
    catalog: str
    sequences: int
    shape_banks: int
    created: bool  # False when the same catalog was already imported


def _safe_sequence_name(name: str, where: Path) -> str:
    try:
        return check_safe_name(name, "sequence name")
    except ValueError as exc:
        raise FarmError(f"{where}: {exc}; rename it in the file") from exc


def _checked_catalog_name(name: str) -> str:
    try:
        return check_safe_name(name, "catalog name")
    except ValueError as exc:
        raise FarmError(f"{exc}; pass another --name") from exc


def read_surreal_npz(path: Path) -> tuple[list[NewSequence], dict[str, np.ndarray]]:
    """The sequences and shape banks of a SURREAL smpl_data.npz, reading only headers and the small banks."""
    headers = array_headers(path)
    pose_keys = sorted(k for k in headers if k.startswith("pose_"))
    if not pose_keys:
        raise FarmError(f"{path} has no pose_<sequence> arrays; is it SURREAL's smpl_data.npz?")
    uri = str(path.resolve())
    sequences = []
    for pose_key in pose_keys:
        name = _safe_sequence_name(pose_key[len("pose_") :], path)
        trans_key = f"trans_{name}"
        (pose_shape, _), trans = headers[pose_key], headers.get(trans_key)
        if len(pose_shape) != 2 or pose_shape[1] != 72 or pose_shape[0] == 0:
            raise FarmError(f"{path}: {pose_key} has shape {pose_shape}, expected (frames, 72) SMPL poses")
        if trans is None or trans[0] != (pose_shape[0], 3):
            raise FarmError(
                f"{path}: {trans_key} is missing or not ({pose_shape[0]}, 3); the file is incomplete"
            )
        subject = subject_of(name)
        sequences.append(
            NewSequence(
                name,
                subject,
                split_for_subject(subject),
                pose_shape[0],
                SURREAL_RATE,
                uri,
                pose_key,
                trans_key,
            )
        )
    banks = {}
    for gender in ("female", "male"):
        key = f"{gender}shapes"
        if key not in headers:
            raise FarmError(f"{path} has no {key!r} shape bank; is it SURREAL's smpl_data.npz?")
        bank = read_array(path, key)
        if bank.ndim != 2 or bank.shape[1] < 10 or not np.isfinite(bank).all():
            raise FarmError(f"{path}: {key} has shape {bank.shape}, expected finite (rows, 10) betas")
        banks[gender] = bank[:, :10].astype(np.float64)
    return sequences, banks


MOCAP_RATES_HZ = (1.0, 1000.0)  # what a motion-capture frame rate can plausibly be


def _frame_rate(path: Path) -> float:
    """An AMASS file's `mocap_framerate`: one number between 1 and 1000 Hz."""
    value = read_array(path, "mocap_framerate")
    low, high = MOCAP_RATES_HZ
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise FarmError(
            f"{path}: mocap_framerate holds {value.size} values of type {value.dtype}, expected one number (Hz)"
        )
    rate = float(value.reshape(()))
    if not (low <= rate <= high):  # also false for NaN
        raise FarmError(
            f"{path}: mocap_framerate is {rate:g} Hz, expected {low:g} to {high:g} Hz; fix the file"
        )
    return rate


def read_amass_dir(root: Path) -> list[NewSequence]:
    """Every AMASS motion file under a folder (`poses`, `trans`, `mocap_framerate`); shape-only files are skipped."""
    if not root.is_dir():
        raise FarmError(f"{root} is not a folder; pass the folder that holds the AMASS .npz files")
    sequences = []
    for path in sorted(root.rglob("*.npz")):
        headers = array_headers(path)
        if "poses" not in headers:
            continue  # e.g. AMASS's per-subject shape.npz
        missing = {"trans", "mocap_framerate"} - headers.keys()
        if missing:
            raise FarmError(f"{path} lacks {', '.join(sorted(missing))}; is it an AMASS motion file?")
        (pose_shape, _), (trans_shape, _) = headers["poses"], headers["trans"]
        if (
            len(pose_shape) != 2
            or pose_shape[1] < 66
            or pose_shape[0] < 2
            or trans_shape != (pose_shape[0], 3)
        ):
            raise FarmError(
                f"{path}: poses {pose_shape} / trans {trans_shape} are not (frames, >=66) / (frames, 3)"
            )
        rate = _frame_rate(path)
        for key in ("poses", "trans"):
            if not np.isfinite(read_array(path, key)).all():
                raise FarmError(f"{path}: {key} holds NaN or infinite values; fix or leave out that file")
        relative = path.relative_to(root).with_suffix("")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(relative.parts))
        name = re.sub(r"_poses$", "", name).lstrip("._-")
        subject = relative.parts[-2] if len(relative.parts) > 1 else subject_of(name)
        sequences.append(
            NewSequence(
                _safe_sequence_name(name, path),
                subject,
                split_for_subject(subject),
                pose_shape[0],
                rate,
                str(path.resolve()),
                "poses",
                "trans",
            )
        )
    if not sequences:
        raise FarmError(f"{root} holds no AMASS motion files (*.npz with 'poses'); check the folder")
    return sequences


def register_catalog(
    session: Session,
    name: str,
    kind: str,
    source_uri: str,
    sequences: list[NewSequence],
    shape_banks: dict[str, np.ndarray] | None = None,
) -> ImportResult:
    """Write a catalog with its sequences and shape banks; importing the same catalog again changes nothing."""
    name = _checked_catalog_name(name)
    existing = session.scalar(select(Catalog).where(Catalog.name == name))
    if existing is not None:
        known = {
            (s.name, s.mocap_frames)
            for s in session.scalars(select(Sequence).where(Sequence.catalog_id == existing.id))
        }
        if existing.kind == kind and known == {(s.name, s.mocap_frames) for s in sequences}:
            return ImportResult(name, len(known), 0, created=False)
        planned = session.scalar(
            select(func.count(Clip.id)).join(Sequence).where(Sequence.catalog_id == existing.id)
        )
        raise FarmError(
            f"a different catalog named {name!r} is already imported (from {existing.source_uri}, "
            f"{len(known)} sequences, {planned} clips planned); import this one with another --name"
        )
    catalog = Catalog(name=name, kind=kind, source_uri=source_uri, created_at=utcnow())
    session.add(catalog)
    session.flush()
    if sequences:
        session.execute(insert(Sequence), [s.row(catalog.id) for s in sequences])
    for gender, bank in (shape_banks or {}).items():
        key = f"{gender}shapes"
        session.add(
            Asset(
                kind="shapes",
                split=None,
                gender=gender,
                uri=f"{source_uri}#{key}",
                checksum=hashlib.sha256(np.ascontiguousarray(bank).tobytes()).hexdigest(),
                catalog_id=catalog.id,
                data=bank.tolist(),
            )
        )
    return ImportResult(name, len(sequences), len(shape_banks or {}), created=True)


def list_sequences(session: Session, catalog: str | None = None) -> list[dict[str, Any]]:
    query = select(Catalog.name, Sequence).join(Catalog).order_by(Catalog.name, Sequence.name)
    if catalog is not None:
        query = query.where(Catalog.name == catalog)
    return [
        {
            "catalog": cat,
            "name": seq.name,
            "subject": seq.subject,
            "split": seq.split,
            "frames": frames_at_30fps(seq.mocap_frames, seq.mocap_rate),
            "mocap_frames": seq.mocap_frames,
            "mocap_rate": seq.mocap_rate,
            "motion_uri": seq.motion_uri,
        }
        for cat, seq in session.execute(query)
    ]


def builtin_sequences() -> list[NewSequence]:
    """The built-in motion library as catalog entries; its motions are generated on demand from their names."""
    from farm.assets.builtin_motions import BUILTIN_RATE, builtin_library

    return [
        NewSequence(m.name, m.subject, m.split, m.frames, BUILTIN_RATE, f"builtin:{m.name}", "poses", "trans")
        for m in builtin_library()
    ]
