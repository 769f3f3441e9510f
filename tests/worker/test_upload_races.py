"""Uploads meet real faults: a worker frozen mid-upload past its lease while another finishes the clip, a
SeaweedFS restart during an upload, and a worker whose scratch folder is a full tmpfs.

Every worker is a process of its own (tests/upload_worker.py) running the farm's `process_clip` on this
session's PostgreSQL, with the farm's storage: a local folder or a SeaweedFS the session started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import enqueue_builtin
from farm_cluster import wait_for, write_short_motions
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.services

WORKER = str(Path(__file__).resolve().parents[1] / "upload_worker.py")


@pytest.fixture(params=["local", "s3"])
def upload_farm(request, farm, pg_farm, tmp_path):  # type: ignore[no-untyped-def]
    """The farm on PostgreSQL with a short lease; storage in a local folder or a SeaweedFS bucket."""
    settings = {"lease_seconds": "2", "upload_retry_s": "60"}
    if request.param == "local":
        pg_farm(storage_url=str(tmp_path / "out"), **settings)
    else:
        seaweed = request.getfixturevalue("seaweed")
        seaweed.ensure_running()
        credentials = request.getfixturevalue("s3_credentials")
        pg_farm(storage_url=f"s3://{seaweed.bucket}/races-{os.urandom(4).hex()}", **credentials, **settings)
    return request.param


def start_worker(clip: int, name: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    log = (tmp_path / f"{name.split(':')[0]}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, WORKER, str(clip), name, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def outcome(process: Any, timeout: float = 120) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out.strip().splitlines()[-1]


def clip_row(pg_url: str) -> dict[str, Any]:
    with create_engine(pg_url).connect() as conn:
        return dict(
            conn.execute(text("SELECT status, attempts, worker, error, checksums FROM clips")).one()._mapping
        )


def stored_keys() -> set[str]:
    """Every object in the farm's storage (temp files included), as keys."""
    from farm.core.settings import get_settings
    from farm.core.storage import LocalStorage, open_storage

    storage = open_storage(get_settings())
    if isinstance(storage, LocalStorage):
        return {p.relative_to(storage.root).as_posix() for p in storage.root.rglob("*") if p.is_file()}
    pages = storage.client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket, Prefix=storage.prefix + "/"
    )
    return {o["Key"].removeprefix(storage.prefix + "/") for page in pages for o in page.get("Contents", [])}


def verify_clean(farm) -> None:  # type: ignore[no-untyped-def]
    result = farm("verify", "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["clean"] and report["checked"] == 1, report


def stopped(process: Any) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    return False


def test_a_worker_frozen_mid_upload_past_its_lease_never_touches_the_finished_clip(
    upload_farm, farm, pg_url, tmp_path
):
    """Worker A stores one file of the clip and freezes (SIGSTOP, lease keeper included) just after the lease
    check before its second file. Its lease runs out, the reconciler takes the clip back, worker B renders and
    stores it (replacing what A left) and marks it done. Then A wakes up: it writes nothing more."""
    (clip,) = enqueue_builtin(farm, pg_url, 1)
    late = start_worker(clip, "racer-a:1", tmp_path, "--stop-at", "2")
    try:
        wait_for(lambda: stopped(late), 60, "worker A to freeze at its second upload")
        assert clip_row(pg_url)["status"] == "running"

        def taken_back() -> bool:
            assert farm("reconcile").code == 0
            return clip_row(pg_url)["status"] == "queued"

        wait_for(taken_back, 30, "the reconciler to take the clip back after the lease expired", every=0.5)
        assert outcome(start_worker(clip, "racer-b:2", tmp_path)) == "done"
        finished = clip_row(pg_url)
        assert finished["status"] == "done" and finished["worker"] == "racer-b:2"
        verify_clean(farm)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(late.pid, signal.SIGCONT)
    assert outcome(late) == "lost lease"
    assert clip_row(pg_url) == finished
    verify_clean(farm)  # A's wake-up changed no byte of B's files
    assert stored_keys() == set(finished["checksums"])  # and left nothing beside them


def test_the_files_an_unfinished_attempt_left_are_replaced_manifest_first(
    upload_farm, farm, pg_url, tmp_path
):
    """An attempt stored every file of the clip, its manifest too, and died before marking it done. The next
    worker replaces them all; the old manifest goes before any file is replaced, so the folder never claims
    to be a complete clip made of two attempts' files."""
    from farm.core.settings import get_settings
    from farm.core.spec import ClipSpec
    from farm.core.storage import open_storage

    (clip,) = enqueue_builtin(farm, pg_url, 1)
    with create_engine(pg_url).connect() as conn:
        spec = ClipSpec.model_validate(conn.execute(text("SELECT spec FROM clips")).scalar_one())
    storage = open_storage(get_settings())
    base = f"{spec.output_dir}/{spec.name}"
    left = [
        f"{base}{suffix}" for suffix in (".mp4", "_info.mat", "_segm.mat", "_depth.mat", "_manifest.json")
    ]
    for i, key in enumerate(left):
        (tmp_path / "old").write_bytes(b"an earlier attempt %d" % i)
        storage.put_file(tmp_path / "old", key)
    gate = tmp_path / "gate"
    gate.mkdir()
    # Upload 1 finds the old mp4; upload 2 is its replacement, after the lease is renewed.
    worker = start_worker(clip, "next:1", tmp_path, "--wait-at", "2", "--gate", str(gate))
    wait_for(lambda: (gate / "paused").exists(), 60, "the worker to replace the first file")
    assert storage.head(f"{base}_manifest.json") is None
    assert storage.read_bytes(f"{base}.mp4") == b"an earlier attempt 0"
    (gate / "go").touch()
    assert outcome(worker) == "done"
    row = clip_row(pg_url)
    assert sorted(row["checksums"]) == sorted(left) and row["attempts"] == 1
    verify_clean(farm)
    assert stored_keys() == set(left)


def test_seaweedfs_restarted_during_an_upload_loses_nothing(
    farm, pg_farm, pg_url, seaweed, s3_credentials, tmp_path
):
    """The worker has stored the clip's first file when SeaweedFS goes down; it comes back 3 s later. The
    worker's uploads wait it out (FARM_UPLOAD_RETRY_S) while its lease is kept: one attempt, done, intact."""
    seaweed.ensure_running()
    pg_farm(
        storage_url=f"s3://{seaweed.bucket}/restart-{os.urandom(4).hex()}",
        lease_seconds="4",
        upload_retry_s="60",
        **s3_credentials,
    )
    (clip,) = enqueue_builtin(farm, pg_url, 1)
    gate = tmp_path / "gate"
    gate.mkdir()
    worker = start_worker(clip, "uploader:1", tmp_path, "--wait-at", "2", "--gate", str(gate))
    try:
        wait_for(lambda: (gate / "paused").exists(), 60, "the worker to reach its second upload")
        seaweed.stop()
        (gate / "go").touch()  # the upload starts against a server that is down
        time.sleep(3)
        assert worker.poll() is None and clip_row(pg_url)["status"] == "running"
    finally:
        seaweed.ensure_running()
    assert outcome(worker) == "done"
    row = clip_row(pg_url)
    assert row["status"] == "done" and row["attempts"] == 1 and len(row["checksums"]) == 5
    verify_clean(farm)
    assert stored_keys() == set(row["checksums"])


@pytest.fixture
def full_tmpfs(tmp_path) -> Any:  # type: ignore[no-untyped-def]
    """A 1 MB tmpfs, filled to the last byte (mounting needs root)."""
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI=true this test must run")
        pytest.skip(message)
    folder = tmp_path / "full"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        with contextlib.suppress(OSError), (folder / "filler").open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.blender
@pytest.mark.slow
def test_a_worker_whose_scratch_folder_is_full_gives_the_clip_back_with_the_reason(
    farm, pg_farm, pg_url, full_tmpfs, tmp_path
):
    """A worker whose TMPDIR is a full tmpfs renders the clip (Blender), cannot write its files, and gives it
    back with one sentence naming the folder and the fix; nothing is stored. A worker with room does it."""
    pg_farm(storage_url=str(tmp_path / "out"), lease_seconds="30")
    write_short_motions(tmp_path, ["14_01"], 40)  # one clip of 10 frames
    assert farm("catalog", "import", "amass", str(tmp_path), "--name", "short").code == 0
    assert farm("enqueue", "--sequences", "short_all", "--runs", "0").code == 0
    with create_engine(pg_url).connect() as conn:
        clip = conn.execute(text("SELECT id FROM clips")).scalar_one()

    full = start_worker(
        clip, "full-disk:1", tmp_path, "--producer", "blender", env={"TMPDIR": str(full_tmpfs)}
    )
    assert outcome(full, 300) == "queued"
    row = clip_row(pg_url)
    assert row["status"] == "queued" and row["attempts"] == 1 and not row["checksums"]
    sentence = row["error"].removeprefix("FarmError: ")
    assert sentence.startswith(f"no space left on device in the scratch folder {full_tmpfs} ("), sentence
    assert "free space there or set TMPDIR" in sentence and sentence.count(". ") == 0 and "\n" not in sentence
    assert stored_keys() == set()  # nothing half-stored

    assert outcome(start_worker(clip, "roomy:2", tmp_path, "--producer", "blender"), 300) == "done"
    row = clip_row(pg_url)
    assert row["status"] == "done" and row["attempts"] == 2 and row["worker"] == "roomy:2"
    verify_clean(farm)
