"""Catalog import and the user errors around it, on the embedded SQLite default."""

import json
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from surreal_data import cmu_table, write_surreal_npz

SMALL = [r for r in cmu_table() if r["sequence"] in {"01_01", "ung_07_02", "143_42", "09_01"}]


@pytest.fixture
def small_npz(tmp_path):
    return write_surreal_npz(tmp_path / "smpl_data.npz", SMALL)


def nothing_written(path="farm.db") -> bool:
    if not Path(path).exists():
        return True
    with sqlite3.connect(path) as conn:
        return all(
            conn.execute(f"select count(*) from {t}").fetchone()[0] == 0
            for t in ("catalogs", "sequences", "clips", "assets")
        )


def test_surreal_import_registers_sequences_with_subject_split_and_banks(farm, small_npz):
    assert farm("catalog", "import", "surreal", str(small_npz)).code == 0
    listed = json.loads(farm("catalog", "list", "--json").out)
    by_name = {row["name"]: row for row in listed}
    assert set(by_name) == {"01_01", "ung_07_02", "143_42", "09_01"}
    assert {"catalog", "name", "subject", "split", "frames"} <= set(by_name["01_01"])
    assert (by_name["01_01"]["catalog"], by_name["01_01"]["subject"], by_name["01_01"]["split"]) == (
        "cmu",
        "01",
        "train",
    )
    assert (by_name["ung_07_02"]["subject"], by_name["ung_07_02"]["split"]) == (
        "07",
        "test",
    )  # subject 07 is a test subject
    assert by_name["01_01"]["frames"] == 688  # ceil(2751 / 4)
    with sqlite3.connect("farm.db") as conn:
        banks = dict(
            conn.execute(
                "select gender, json_array_length(data) from assets where kind = 'shapes'"
            ).fetchall()
        )
    assert banks == {"female": 2103, "male": 1700}


def test_reimport_is_a_no_op_and_a_different_catalog_under_the_same_name_is_refused(
    farm, small_npz, tmp_path
):
    farm("catalog", "import", "surreal", str(small_npz))
    again = farm("catalog", "import", "surreal", str(small_npz))
    assert again.code == 0 and "already imported" in again.out
    other = write_surreal_npz(tmp_path / "other.npz", SMALL[:2])
    refused = farm("catalog", "import", "surreal", str(other))
    assert refused.code == 3 and "another --name" in refused.err
    assert farm("catalog", "import", "surreal", str(other), "--name", "cmu2").code == 0


def test_import_reads_headers_not_the_whole_file(small_npz, monkeypatch):
    """Only the small shape banks are read in full; the motion arrays are catalogued from their headers."""
    from farm.assets import untrusted as npz
    from scheduler.catalogs import read_surreal_npz

    read = []
    real = npz.read_array
    monkeypatch.setattr(
        "scheduler.catalogs.read_array", lambda path, key: read.append(key) or real(path, key)
    )
    sequences, banks = read_surreal_npz(small_npz)
    assert (
        sorted(read) == ["femaleshapes", "maleshapes"]
        and len(sequences) == 4
        and banks["male"].shape == (1700, 10)
    )


def corrupt(path):
    path.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    return path


def no_poses(path):
    np.savez(path, maleshapes=np.zeros((5, 10)), femaleshapes=np.zeros((5, 10)))
    return path


def pickled(path):
    np.savez(path, pose_01_01=np.array([{"evil": 1}], dtype=object))
    return path


def escaping_name(path):
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in {"pose_../x": np.zeros((10, 72)), "trans_../x": np.zeros((10, 3))}.items():
            with archive.open(f"{key}.npy", "w") as stream:
                np.lib.format.write_array(stream, array)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "does not exist"),
        (corrupt, "not a readable .npz"),
        (no_poses, "no pose_<sequence> arrays"),
        (pickled, "holds Python objects"),
        (escaping_name, "is not allowed"),
    ],
)
def test_bad_npz_ends_in_one_sentence_and_writes_nothing(farm, tmp_path, make, message):
    path = make(tmp_path / "bad.npz")
    result = farm("catalog", "import", "surreal", str(path))
    assert result.code == 3
    assert message in result.err and result.err.count("\n") == 1 and "Traceback" not in result.err
    assert nothing_written()


def test_amass_folder_import_resamples_to_30_fps(farm, tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "CMU"
    for subject, trial, frames, rate in [
        ("07", "01", 480, 120.0),
        ("01", "02", 250, 100.0),
        ("143", "07", 61, 60.0),
    ]:
        (root / subject).mkdir(parents=True, exist_ok=True)
        np.savez(
            root / subject / f"{subject}_{trial}_poses.npz",
            poses=rng.normal(0, 0.1, (frames, 156)),
            trans=np.zeros((frames, 3)),
            betas=np.zeros(16),
            gender=np.array("female"),
            mocap_framerate=np.array(rate),
        )
    np.savez(root / "07" / "shape.npz", betas=np.zeros(16), gender=np.array("male"))  # skipped: no poses
    assert farm("catalog", "import", "amass", str(root), "--name", "amass_cmu").code == 0
    rows = {r["name"]: r for r in json.loads(farm("catalog", "list", "--json").out)}
    assert {n: (r["subject"], r["split"], r["frames"]) for n, r in rows.items()} == {
        "07_07_01": ("07", "test", 120),
        "01_01_02": ("01", "train", 75),
        "143_143_07": ("143", "train", 31),
    }


def test_unknown_names_escapes_and_catalogs_are_refused(farm, small_npz):
    farm("catalog", "import", "surreal", str(small_npz))
    for selector, message in [
        ("nope_all", "unknown sequence or catalog: nope_all"),
        ("01_01,99_99", "unknown sequence or catalog: 99_99"),
        ("../x", "is not a sequence name"),
        ("cmu/../../etc", "is not a sequence name"),
    ]:
        result = farm("enqueue", "--sequences", selector, "--dry-run")
        assert result.code == 3 and message in result.err, (selector, result.err)
    assert farm("enqueue", "--sequences", "cmu_all", "--runs", "0,5", "--dry-run").code == 2  # bad usage


def test_unreachable_database_is_one_sentence(farm, farm_env, small_npz):
    farm_env(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    result = farm("catalog", "import", "surreal", str(small_npz))
    assert result.code == 4
    assert "cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:1/nowhere" in result.err
    assert "FARM_DATABASE_URL" in result.err and result.err.count("\n") == 1
