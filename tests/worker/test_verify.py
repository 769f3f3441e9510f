"""`farm verify`: done clips against storage, on the local folder and on S3 (SeaweedFS)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from farm.cli.outputs import verify
from farm.core.db import session_scope
from farm.core.errors import FarmError
from farm.core.models import Clip, ClipStatus
from farm.core.settings import get_settings
from farm.core.spec import ClipSpec
from farm.core.storage import open_storage
from worker.verify import verify_clips


@pytest.fixture(params=["local", "s3"])
def done_clips(request, farm, farm_env, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Three built-in clips planned on the embedded database, two marked done with their files stored."""
    if request.param == "local":
        farm_env(storage_url=str(tmp_path / "out"))
    else:
        seaweed = request.getfixturevalue("seaweed")
        seaweed.ensure_running()
        prefix = f"verify-{os.urandom(4).hex()}"
        farm_env(storage_url=f"s3://{seaweed.bucket}/{prefix}", **request.getfixturevalue("s3_credentials"))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "3").code == 0
    settings = get_settings()
    storage = open_storage(settings)
    keys: dict[str, list[str]] = {}
    with session_scope(settings.database_url) as session:
        clips = session.scalars(select(Clip).order_by(Clip.id)).all()
        for clip in clips[:2]:
            folder = ClipSpec.model_validate(clip.spec).output_dir
            checksums = {}
            for name in (f"{clip.name}.mp4", f"{clip.name}_info.npz"):
                local = tmp_path / "render" / name
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(os.urandom(2000) + name.encode())
                info = storage.put_file(local, f"{folder}/{name}")
                checksums[f"{folder}/{name}"] = {"sha256": info.sha256, "size": info.size}
            clip.status, clip.checksums, clip.output_uri = ClipStatus.DONE, checksums, storage.uri(folder)
            keys[clip.name] = sorted(checksums)
    return settings, storage, keys


def run_verify(*args: str) -> Any:
    app = typer.Typer()
    app.command()(verify)
    return CliRunner().invoke(app, list(args))


def report(settings: Any, storage: Any, deep: bool = True) -> Any:
    with session_scope(settings.database_url) as session:
        return verify_clips(session, storage, deep)


def test_clean_storage(done_clips):
    settings, storage, keys = done_clips
    seen: list[tuple[int, int]] = []
    with session_scope(settings.database_url) as session:
        result = verify_clips(session, storage, True, lambda done, total: seen.append((done, total)))
    assert (result.checked, result.objects, result.missing, result.corrupt) == (2, 4, [], [])
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)
    assert report(settings, storage, deep=False).clean
    for args in ([], ["--quick"]):
        run = run_verify(*args)
        assert run.exit_code == 0, run.output
    data = json.loads(run_verify("--json").stdout)
    assert data == {"checked": 2, "objects": 4, "clean": True, "missing": [], "corrupt": []}


def test_deleted_object_is_missing(done_clips):
    settings, storage, keys = done_clips
    clip, (key, _) = next(iter(keys.items()))
    storage.delete(key)
    for deep in (True, False):
        result = report(settings, storage, deep)
        assert result.missing == [(clip, key)] and result.corrupt == []
    run = run_verify("--quick")
    assert run.exit_code == 1
    assert "missing" in run.stdout and "missing" not in run.stderr  # the report is the result: stdout
    data = json.loads(run_verify("--json").stdout)
    assert data["missing"] == [{"clip": clip, "key": key}] and not data["clean"]


def test_overwritten_object_is_corrupt(done_clips, tmp_path):
    settings, storage, keys = done_clips
    clip, (_, key) = list(keys.items())[1]
    original = storage.read_bytes(key)
    # Another upload replaced it with other bytes of the same size (the stored sha256 changes with them).
    damaged = bytes([original[0] ^ 0xFF]) + original[1:]
    (tmp_path / "bad").write_bytes(damaged)
    storage.put_file(tmp_path / "bad", key)
    for deep in (True, False):
        result = report(settings, storage, deep)
        assert result.missing == [] and [(c, k) for c, k, _ in result.corrupt] == [(clip, key)]
        assert "sha256" in result.corrupt[0][2]
    run = run_verify()
    assert run.exit_code == 1 and "corrupt" in run.stdout


def test_bit_rot_is_found_by_a_deep_check_only(tmp_path, farm, farm_env):
    farm_env(storage_url=str(tmp_path / "out"))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "1").code == 0
    settings = get_settings()
    storage = open_storage(settings)
    (tmp_path / "f").write_bytes(b"0123456789")
    info = storage.put_file(tmp_path / "f", "clip/f.bin")
    with session_scope(settings.database_url) as session:
        clip = session.scalars(select(Clip)).one()
        clip.status, clip.checksums = ClipStatus.DONE, {"clip/f.bin": {"sha256": info.sha256, "size": 10}}
    with (storage.root / "clip/f.bin").open("r+b") as f:  # damage in place, keeping the stored sha256
        f.write(b"X")
    assert report(settings, storage, deep=False).clean
    (corrupt,) = report(settings, storage, deep=True).corrupt
    assert corrupt[1] == "clip/f.bin" and "sha256" in corrupt[2]
    # Truncation changes the size, which the quick check sees.
    os.truncate(storage.root / "clip/f.bin", 4)
    (corrupt,) = report(settings, storage, deep=False).corrupt
    assert "size 4 bytes, recorded 10" in corrupt[2]


def test_malformed_records_are_reported_not_crashed_on(tmp_path, farm, farm_env):
    farm_env(storage_url=str(tmp_path / "out"))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "3").code == 0
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        a, b, c = session.scalars(select(Clip).order_by(Clip.id)).all()
        a.status, a.checksums = ClipStatus.DONE, None
        b.status, b.checksums = ClipStatus.DONE, {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}
        c.status, c.checksums = ClipStatus.DONE, {"x/y": {"sha256": "nope", "size": "big"}}
    result = report(settings, open_storage(settings))
    assert result.checked == 3 and result.missing == []
    assert [(clip, key) for clip, key, _ in result.corrupt] == [
        (a.name, ""),
        (b.name, "../../etc/passwd"),
        (c.name, "x/y"),
    ]


def test_unreachable_storage_is_one_clear_error(farm_env, monkeypatch):
    from seaweed import free_ports

    (port,) = free_ports(1)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    farm_env(storage_url="s3://bucket/x", s3_endpoint_url=f"http://127.0.0.1:{port}")
    run = run_verify()
    assert isinstance(run.exception, FarmError) and "cannot reach S3" in str(run.exception)
