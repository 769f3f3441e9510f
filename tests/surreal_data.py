"""A SURREAL-shaped smpl_data.npz built from the reference table of the 2,667 CMU sequences (zero poses)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

TSV = Path(__file__).parent / "data" / "cmu_sequences.tsv"


def cmu_table() -> list[dict[str, str]]:
    with TSV.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _write_member(archive: zipfile.ZipFile, key: str, array: np.ndarray) -> None:
    with archive.open(f"{key}.npy", "w", force_zip64=True) as stream:
        np.lib.format.write_array(stream, array, allow_pickle=False)


def write_surreal_npz(
    path: Path, rows: list[dict[str, str]] | None = None, rng: np.random.Generator | None = None
) -> Path:
    """Write `pose_<seq>` (T, 72), `trans_<seq>` (T, 3), and CAESAR-sized shape banks, one member at a time.

    Poses are zeros (they compress to almost nothing) unless a generator is given for small random ones.
    """
    rows = cmu_table() if rows is None else rows
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for row in rows:
            frames = int(row["mocap_frames_120hz"])
            poses = np.zeros((frames, 72), np.float32)
            trans = np.zeros((frames, 3), np.float32)
            if rng is not None:
                poses = rng.normal(0, 0.1, poses.shape).astype(np.float32)
                trans[:, 2] = np.linspace(0, frames / 120, frames)
            _write_member(archive, f"pose_{row['sequence']}", poses)
            _write_member(archive, f"trans_{row['sequence']}", trans)
        shapes_rng = rng if rng is not None else np.random.default_rng(7)
        _write_member(archive, "femaleshapes", shapes_rng.normal(0, 1, (2103, 10)))
        _write_member(archive, "maleshapes", shapes_rng.normal(0, 1, (1700, 10)))
    return path
