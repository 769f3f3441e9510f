"""Storage: one contract for the local folder and S3 (a real SeaweedFS), plus S3's failure modes."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from seaweed import ACCESS_KEY, SECRET_KEY, free_ports

from farm.core.errors import FarmError
from farm.core.settings import Settings
from farm.core.storage import (
    LocalStorage,
    ObjectInfo,
    S3Storage,
    Storage,
    Stored,
    cached_asset,
    open_storage,
)

KEY = "cmu/train/run0/01_01/01_01_c0001.mp4"


def s3_storage(seaweed: Any, **options: Any) -> S3Storage:
    """A storage under a prefix of its own in the session's bucket."""
    options = {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, **options}
    return S3Storage(seaweed.bucket, f"t-{uuid.uuid4().hex[:8]}/out", seaweed.endpoint, **options)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Iterator[Storage]:  # type: ignore[no-untyped-def]
    if request.param == "local":
        yield LocalStorage(tmp_path / "out")
    else:
        seaweed = request.getfixturevalue("seaweed")
        seaweed.ensure_running()
        yield s3_storage(seaweed)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def expected(data: bytes) -> ObjectInfo:
    return ObjectInfo(hashlib.sha256(data).hexdigest(), len(data))


def count_puts(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys actually written from now on (S3 PUTs, or local files replaced)."""
    written: list[str] = []
    if isinstance(storage, S3Storage):
        storage.client.meta.events.register(
            "before-call.s3.PutObject", lambda params, **_: written.append(params["url_path"])
        )
    else:
        real = os.replace

        def spy(src: Any, dst: Any) -> None:
            written.append(str(dst))
            real(src, dst)

        monkeypatch.setattr(os, "replace", spy)
    return written


# The contract ---------------------------------------------------------------------------------------------


def test_put_then_stat_hash_read_get(storage, tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    storage.check()
    info = storage.put_file(write(tmp_path / "clip.mp4", data), KEY)
    assert info == expected(data)
    assert storage.stat(KEY) == info  # sha256 kept with the object, no download
    assert storage.hash(KEY) == info
    assert storage.read_bytes(KEY) == data
    storage.get_file(KEY, tmp_path / "back" / "clip.mp4")
    assert (tmp_path / "back" / "clip.mp4").read_bytes() == data
    assert storage.key_of(storage.uri(KEY)) == KEY


def test_missing_objects(storage, tmp_path):
    assert storage.stat("nope/a.mp4") is None
    assert storage.hash("nope/a.mp4") is None
    with pytest.raises(FarmError, match="does not exist"):
        storage.read_bytes("nope/a.mp4")
    with pytest.raises(FarmError, match="does not exist"):
        storage.get_file("nope/a.mp4", tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()
    storage.delete("nope/a.mp4")  # deleting nothing is fine


def test_put_is_idempotent_and_replaces_changed_content(storage, tmp_path, monkeypatch):
    first = write(tmp_path / "a", b"first version")
    storage.put_file(first, KEY)
    written = count_puts(storage, monkeypatch)
    assert storage.put_file(first, KEY) == expected(b"first version")
    assert storage.put_file(write(tmp_path / "b", b"first version"), KEY) == expected(b"first version")
    assert written == []  # same bytes already stored: nothing sent or rewritten

    # A new attempt that produced different bytes replaces the object whole.
    storage.put_file(write(tmp_path / "c", b"second"), KEY)
    assert len(written) == 1
    assert storage.stat(KEY) == expected(b"second")
    assert storage.read_bytes(KEY) == b"second"


def test_empty_file(storage, tmp_path):
    assert storage.put_file(write(tmp_path / "empty", b""), "a/empty") == expected(b"")
    assert storage.stat("a/empty") == expected(b"")
    assert storage.read_bytes("a/empty") == b""


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "a//b", "a/./b", "a/../b", "dir/", "", "a\\b"])
def test_keys_that_could_escape_the_root_are_refused(storage, tmp_path, key):
    with pytest.raises(FarmError, match="not a plain relative path"):
        storage.put_file(write(tmp_path / "x", b"x"), key)
    with pytest.raises(FarmError, match="not a plain relative path"):
        storage.stat(key)


# Create-only writes (what workers use) ---------------------------------------------------------------------


def test_put_new_never_writes_over_an_object_it_was_not_told_to_replace(storage, tmp_path, monkeypatch):
    ours, theirs = write(tmp_path / "ours", b"ours"), write(tmp_path / "theirs", b"theirs!")
    assert storage.head(KEY) is None
    assert storage.put_new(theirs, KEY) == expected(b"theirs!")  # a free key is created
    written = count_puts(storage, monkeypatch)
    assert storage.put_new(theirs, KEY) == expected(b"theirs!")  # the same bytes: nothing written
    found = storage.put_new(ours, KEY)
    assert isinstance(found, Stored) and found.info == expected(b"theirs!")
    assert found == storage.head(KEY)
    assert storage.read_bytes(KEY) == b"theirs!" and written == []

    # Replacing needs the version of the object that is there now, and only that one.
    assert storage.put_new(ours, KEY, replacing=found.version) == expected(b"ours")
    assert storage.read_bytes(KEY) == b"ours"
    again = storage.put_new(theirs, KEY, replacing=found.version)  # stale: it was replaced since
    assert isinstance(again, Stored) and again.info == expected(b"ours")
    assert storage.read_bytes(KEY) == b"ours"

    storage.delete(KEY, version=found.version)  # not the object named: kept
    assert storage.read_bytes(KEY) == b"ours"
    storage.delete(KEY, version=again.version)
    assert storage.head(KEY) is None
    storage.delete(KEY, version=again.version)  # already gone: fine


def test_local_create_that_stalls_before_it_lands_loses_to_the_object_written_meanwhile(
    tmp_path, monkeypatch
):
    """A writer frozen between writing its temp file and publishing it does not land over another's."""
    import farm.core.storage as module

    store = LocalStorage(tmp_path / "out")
    real_commit = module._commit
    stalled, resume = threading.Event(), threading.Event()

    def commit(f: Any, temp: Path, dest: Path, replace: bool = True) -> None:
        if threading.current_thread().name == "late":
            stalled.set()
            resume.wait(10)
        real_commit(f, temp, dest, replace)

    monkeypatch.setattr(module, "_commit", commit)
    results: list[Any] = []
    late = threading.Thread(
        target=lambda: results.append(store.put_new(write(tmp_path / "late", b"late"), KEY)), name="late"
    )
    late.start()
    assert stalled.wait(10)
    assert store.put_new(write(tmp_path / "first", b"first"), KEY) == expected(b"first")
    resume.set()
    late.join()
    assert isinstance(results[0], Stored) and results[0].info == expected(b"first")
    assert store.read_bytes(KEY) == b"first"
    assert not list(store.root.rglob("*.tmp"))


def test_s3_create_that_stalls_mid_body_loses_to_the_object_written_meanwhile(seaweed):
    """SeaweedFS decides If-None-Match when the body has arrived: a PUT frozen halfway cannot land late."""
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    size = 1 << 20
    url = store.client.generate_presigned_url(
        "put_object", Params={"Bucket": store.bucket, "Key": f"{store.prefix}/{KEY}"}, ExpiresIn=60
    )
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as conn:
        head = (
            f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {size}\r\nIf-None-Match: *\r\n\r\n"
        )
        conn.sendall(head.encode() + b"x" * (size // 2))  # the late writer freezes halfway
        time.sleep(0.3)
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/{KEY}", Body=b"finished")
        conn.sendall(b"x" * (size - size // 2))
        assert b" 412 " in conn.recv(100).split(b"\r\n")[0]
    assert store.read_bytes(KEY) == b"finished"


# Atomicity --------------------------------------------------------------------------------------------------

CRASHING_PUT = """
import os, sys
from pathlib import Path
import farm.core.storage as storage
storage._commit = lambda *args: os._exit(9)  # die after writing the bytes, before they are published
storage.LocalStorage(Path(sys.argv[1])).put_file(Path(sys.argv[2]), sys.argv[3])
"""


def test_local_crash_mid_write_leaves_no_object(tmp_path):
    store = LocalStorage(tmp_path / "out")
    big = write(tmp_path / "big", os.urandom(1 << 20))
    crash = [sys.executable, "-c", CRASHING_PUT, str(store.root), str(big)]
    assert subprocess.run([*crash, "new/clip.mp4"]).returncode == 9
    assert store.stat("new/clip.mp4") is None

    store.put_file(write(tmp_path / "old", b"old"), "old/clip.mp4")
    assert subprocess.run([*crash, "old/clip.mp4"]).returncode == 9
    assert store.read_bytes("old/clip.mp4") == b"old"  # the previous object is untouched
    # A retry after the crash publishes the whole file.
    assert store.put_file(big, "new/clip.mp4") == store.hash("new/clip.mp4")


def test_s3_interrupted_upload_leaves_no_object(seaweed):
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    size = 1 << 20
    url = store.client.generate_presigned_url(
        "put_object", Params={"Bucket": store.bucket, "Key": store.prefix + "/part.bin"}, ExpiresIn=60
    )
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as conn:
        head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {size}\r\n\r\n"
        conn.sendall(head.encode() + b"x" * (size // 2))  # the client dies halfway through the body
    time.sleep(0.5)
    assert store.stat("part.bin") is None


def test_s3_conditional_write_lost_to_the_same_bytes_does_not_rewrite(seaweed, tmp_path, monkeypatch):
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    other = s3_storage(seaweed)
    other.prefix = store.prefix
    data = write(tmp_path / "a", b"same bytes")
    other.put_file(data, KEY)
    # Our look ran before the other writer finished: the If-None-Match PUT then gets 412.
    real_head = store.head
    stale = [True]  # the next head answers "absent", as it did before the other writer finished

    def head(key: str) -> Stored | None:
        return None if stale and stale.pop() else real_head(key)

    monkeypatch.setattr(store, "head", head)
    written = count_puts(store, monkeypatch)
    assert store.put_new(data, KEY) == expected(b"same bytes")
    assert len(written) == 1  # the conditional attempt only, refused by the server
    assert store._conditional_writes  # SeaweedFS supports If-None-Match

    # Lost to other bytes: put_new says what is there and never writes over it; put_file replaces it.
    stale.append(True)
    lost = store.put_new(write(tmp_path / "b", b"other bytes"), KEY)
    assert isinstance(lost, Stored) and lost.info == expected(b"same bytes")
    assert store.read_bytes(KEY) == b"same bytes" and len(written) == 2
    stale.append(True)
    assert store.put_file(write(tmp_path / "b", b"other bytes"), KEY) == expected(b"other bytes")
    assert store.read_bytes(KEY) == b"other bytes"


# S3 errors a user can cause ----------------------------------------------------------------------------------


def test_s3_unreachable_endpoint(tmp_path):
    (port,) = free_ports(1)
    store = S3Storage("b", "", f"http://127.0.0.1:{port}", access_key="a", secret_key="b", retry_seconds=1)
    with pytest.raises(FarmError, match=r"cannot reach S3 at http://127\.0\.0\.1.*FARM_S3_ENDPOINT_URL"):
        store.check()
    with pytest.raises(FarmError, match="kept failing"):
        store.put_file(write(tmp_path / "a", b"a"), "a")


@pytest.mark.parametrize("access_key", [ACCESS_KEY, "nobody"])
def test_s3_wrong_credentials(seaweed, tmp_path, access_key):
    seaweed.ensure_running()
    store = s3_storage(seaweed, access_key=access_key, secret_key="wrong-secret")
    with pytest.raises(FarmError, match="refused the S3 credentials.*AWS_ACCESS_KEY_ID"):
        store.check()
    with pytest.raises(FarmError, match="refused the S3 credentials"):
        store.put_file(write(tmp_path / "a", b"a"), "a")


def test_s3_missing_bucket(seaweed, tmp_path):
    seaweed.ensure_running()
    store = S3Storage("no-such-bucket", "x", seaweed.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    message = (
        f"the bucket 'no-such-bucket' does not exist at {seaweed.endpoint}: create it or fix FARM_STORAGE_URL"
    )
    with pytest.raises(FarmError) as caught:
        store.check()
    assert str(caught.value) == message
    with pytest.raises(FarmError, match="'no-such-bucket' does not exist"):
        store.put_file(write(tmp_path / "a", b"a"), "a")


def test_s3_missing_credentials(seaweed, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Storage(seaweed.bucket, "", seaweed.endpoint)
    with pytest.raises(FarmError, match="no S3 credentials found.*AWS_ACCESS_KEY_ID"):
        store.check()


# Outages ----------------------------------------------------------------------------------------------------


def test_upload_waits_out_a_short_outage(seaweed, tmp_path):
    seaweed.ensure_running()
    store = s3_storage(seaweed, retry_seconds=60, max_backoff=1)
    data = os.urandom(100_000)
    seaweed.stop()
    restart = threading.Timer(2.0, seaweed.start)
    restart.start()
    try:
        assert store.put_file(write(tmp_path / "a", data), KEY) == expected(data)
    finally:
        restart.join()
        seaweed.ensure_running()
    assert store.hash(KEY) == expected(data)


def test_an_outage_longer_than_the_retry_window_is_a_clear_error(seaweed, tmp_path):
    seaweed.ensure_running()
    store = s3_storage(seaweed, retry_seconds=2, max_backoff=0.5)
    seaweed.stop()
    try:
        started = time.monotonic()
        with pytest.raises(FarmError, match=r"kept failing for 2 s while .*check that the server is running"):
            store.put_file(write(tmp_path / "a", b"a"), KEY)
        assert time.monotonic() - started < 15
    finally:
        seaweed.ensure_running()


# Choosing a storage and assets --------------------------------------------------------------------------------


def test_open_storage_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s3 = open_storage(Settings(storage_url="s3://bucket/some/prefix/", s3_endpoint_url="http://h:1"))
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "some/prefix", "http://h:1")
    assert s3.uri("a/b.mp4") == "s3://bucket/some/prefix/a/b.mp4"
    assert s3.key_of("s3://bucket/some/prefix/a/b.mp4") == "a/b.mp4"
    assert s3.key_of("s3://bucket/other/a/b.mp4") is None
    local = open_storage(Settings(storage_url=str(tmp_path / "out")))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "out"
    assert isinstance(open_storage(Settings(storage_url=f"file://{tmp_path}")), LocalStorage)
    with pytest.raises(FarmError, match="neither a local folder nor s3://"):
        open_storage(Settings(storage_url="gs://bucket/x"))
    with pytest.raises(FarmError, match="names no bucket"):
        open_storage(Settings(storage_url="s3:///x"))


def test_local_check_reports_an_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FarmError, match="cannot create the output folder"):
        LocalStorage(tmp_path / "file" / "out").check()


def test_cached_asset_downloads_once_and_shares_across_threads(seaweed, tmp_path):
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    texture = os.urandom(500_000)
    store.put_file(write(tmp_path / "tex.png", texture), "assets/textures/tex.png")
    uri = store.uri("assets/textures/tex.png")
    downloads: list[str] = []
    store.client.meta.events.register("before-call.s3.GetObject", lambda **_: downloads.append("get"))
    cache = tmp_path / "cache"

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cached_asset(store, uri, cache))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0].read_bytes() == texture
    assert results[0].name == "tex.png" and results[0].is_relative_to(cache)
    before = len(downloads)
    assert cached_asset(store, uri, cache) == results[0]
    assert len(downloads) == before  # served from the cache
    assert not [p for p in cache.rglob("*.tmp")]  # no temp files left behind


def test_cached_asset_errors_and_local_paths(seaweed, tmp_path):
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    local = write(tmp_path / "bg.jpg", b"jpeg")
    assert cached_asset(store, str(local), tmp_path / "cache") == local
    with pytest.raises(FarmError, match="the asset .*missing.jpg does not exist"):
        cached_asset(store, str(tmp_path / "missing.jpg"), tmp_path / "cache")
    with pytest.raises(FarmError, match=r"is not in storage; upload it there"):
        cached_asset(store, store.uri("assets/missing.png"), tmp_path / "cache")
    with pytest.raises(FarmError, match="outside the farm's storage"):
        cached_asset(store, "s3://elsewhere/tex.png", tmp_path / "cache")


def test_cached_asset_from_settings_with_local_storage(tmp_path):
    settings = Settings(storage_url=str(tmp_path / "out"), cache_dir=tmp_path / "cache")
    store = open_storage(settings)
    store.put_file(write(tmp_path / "t.png", b"png"), "assets/t.png")
    assert cached_asset(settings, store.uri("assets/t.png")).read_bytes() == b"png"


def test_local_objects_get_the_usual_file_mode(tmp_path):
    """Stored files are as readable as any file the user writes (umask applies), not mkstemp's 0600."""
    import os
    import stat

    from farm.core.files import FILE_MODE
    from farm.core.storage import LocalStorage

    source = tmp_path / "a.txt"
    source.write_text("x")
    LocalStorage(tmp_path / "root").put_file(source, "clips/a.txt")
    mode = stat.S_IMODE(os.stat(tmp_path / "root" / "clips" / "a.txt").st_mode)
    assert mode == FILE_MODE and mode & 0o444 == 0o444 & FILE_MODE


@pytest.mark.parametrize(
    ("recorded", "key"),
    [
        ("../../../../../escaped", "assets/tex.png"),
        ("/tmp/absolute", "assets/tex.png"),
        ("ab" * 32, "assets/tex.png"),  # a well-formed digest, but not the object's
    ],
)
def test_cache_paths_come_only_from_a_validated_digest(seaweed, tmp_path, recorded, key):
    """A bucket writer's metadata (x-amz-meta-sha256) names no path outside the cache (keys that climb are
    refused by check_key, test_keys_that_could_escape_the_root_are_refused)."""
    seaweed.ensure_running()
    store = s3_storage(seaweed)
    body = os.urandom(1000)
    store.client.put_object(
        Bucket=store.bucket, Key=store._key(key), Body=body, Metadata={"sha256": recorded}
    )
    cache = tmp_path / "deep" / "cache"
    if recorded == "ab" * 32:  # well-formed but wrong: the download does not match it
        with pytest.raises(FarmError, match="does not match its stored sha256"):
            cached_asset(store, store.uri(key), cache)
        assert not list(tmp_path.rglob("*.tmp"))
        return
    path = cached_asset(store, store.uri(key), cache)
    assert path.resolve().is_relative_to(cache.resolve()) and path.read_bytes() == body
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [path.name]
