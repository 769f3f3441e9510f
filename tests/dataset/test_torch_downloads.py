"""SurrealClips over S3 (a real SeaweedFS) and the farm's database: clips are chosen before anything is
downloaded, every downloaded or cached file is checked against the size and sha256 the database records, a spec
whose name climbs out of its folder is refused, and the temporary download folder goes with the dataset."""

from __future__ import annotations

import gc
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from farm.core.db import session_scope
from farm.core.errors import FarmError
from farm.core.models import Clip, ClipStatus
from farm.core.settings import get_settings
from farm.core.storage import LocalStorage, open_storage
from worker.qc import clip_suffixes


@pytest.fixture
def stored_clips(farm, farm_env, tmp_path, seaweed, s3_credentials) -> dict[str, Any]:
    """Three done clips of the built-in catalog in S3, with their checksums and qc in the database: the first
    shows its body in every frame, the others in none. Their files are small stand-ins (only the manifest is
    read here: the checks come before any reader)."""
    seaweed.ensure_running()
    prefix = f"dataset-{uuid.uuid4().hex[:8]}"
    farm_env(storage_url=f"s3://{seaweed.bucket}/{prefix}", **s3_credentials)
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "3").code == 0
    settings = get_settings()
    storage = open_storage(settings)
    files = tmp_path / "rendered"
    keys: dict[str, list[str]] = {}
    with session_scope(settings.database_url) as session:
        for n, clip in enumerate(session.scalars(select(Clip).order_by(Clip.id))):
            qc = {"frames": clip.frames, "frames_with_body": clip.frames if n == 0 else 0}
            checksums = {}
            for suffix in clip_suffixes(1):
                key = f"{clip.spec['catalog']}/{clip.split}/run{clip.run}/{clip.spec['sequence']}/{clip.name}{suffix}"
                local = files / key
                local.parent.mkdir(parents=True, exist_ok=True)
                if suffix == "_manifest.json":
                    local.write_text(json.dumps({"spec": clip.spec, "frames": clip.frames, "qc": qc}))
                else:
                    local.write_bytes(f"{clip.name}{suffix} ".encode() * 100)
                info = storage.put_file(local, key)
                checksums[key] = {"sha256": info.sha256, "size": info.size}
            clip.status, clip.qc, clip.checksums = ClipStatus.DONE, qc, checksums
            keys[clip.name] = list(checksums)
    return {"storage": storage, "keys": keys, "files": files, "url": settings.database_url}


def cached(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_clips_are_chosen_before_download_and_every_file_is_checked(stored_clips, tmp_path):
    from farm.dataset import ClipFileError, SurrealClips

    storage, keys = stored_clips["storage"], stored_clips["keys"]
    first, *others = keys
    cache = tmp_path / "cache"
    chosen = SurrealClips.from_farm(where=["frames_with_body>=0.5"], download_dir=cache, index="clip")
    assert [c.name for c in chosen.clips] == [first]
    assert cached(cache) == set(keys[first])  # the others' files were never fetched

    # A cached copy that differs from the record (same size, other bytes) is downloaded again, once.
    segm = cache / next(k for k in keys[first] if k.endswith("_segm.mat"))
    good = segm.read_bytes()
    segm.write_bytes(bytes(len(good)))
    SurrealClips.from_farm(where=["frames_with_body>=0.5"], download_dir=cache)
    assert segm.read_bytes() == good

    # The object itself damaged in storage: refused in one sentence naming it, and nothing of it kept.
    key = next(k for k in keys[first] if k.endswith("_depth.mat"))
    bad = tmp_path / "bad"
    bad.write_bytes(b"not what was rendered")
    storage.put_file(bad, key)
    (cache / key).write_bytes(b"also not")
    with pytest.raises(ClipFileError) as refused:
        SurrealClips.from_farm(where=["frames_with_body>=0.5"], download_dir=cache)
    sentence = str(refused.value)
    assert sentence.startswith(f"{storage.uri(key)} does not match the size and sha256 the database records")
    assert "\n" not in sentence and not (cache / key).exists()
    assert len(SurrealClips.from_farm(where=["frames_with_body<0.5"], download_dir=cache).clips) == 2


def test_a_done_clip_without_checksums_is_not_taken_unchecked(stored_clips, tmp_path):
    from farm.dataset import ClipFileError, SurrealClips

    with session_scope(stored_clips["url"]) as session:
        session.execute(update(Clip).values(checksums=None))
    with pytest.raises(ClipFileError, match="the database records no size and sha256 for s3://"):
        SurrealClips.from_farm(download_dir=tmp_path / "cache")


def test_the_temporary_download_folder_goes_with_the_dataset(stored_clips):
    from farm.dataset import SurrealClips

    closed = SurrealClips.from_farm()
    folder = closed.download_dir
    assert folder is not None and cached(folder)
    closed.close()
    assert not folder.exists()

    dropped = SurrealClips.from_farm(split="test")  # none of the three: the folder is made all the same
    folder = dropped.download_dir
    assert folder is not None and folder.exists() and cached(folder) == set()
    del dropped
    gc.collect()
    assert not folder.exists()


def test_a_spec_whose_name_climbs_out_is_refused(stored_clips, tmp_path):
    """A database row naming `../../outside/...`: the dataset would read (local) or write (download) there."""
    from farm.dataset import SurrealClips

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret_manifest.json").write_text("{}")
    with session_scope(stored_clips["url"]) as session:
        clip = session.scalars(select(Clip).order_by(Clip.id)).first()
        assert clip is not None
        spec = {**clip.spec, "name": "../../../../outside/secret"}
        clip.spec = spec
    for storage in (stored_clips["storage"], LocalStorage(tmp_path / "out" / "a" / "b")):
        with pytest.raises(FarmError) as refused:
            SurrealClips(storage, [spec], download_dir=tmp_path / "cache")
        assert str(refused.value).startswith(
            "a stored clip spec is not valid (name: the name '../../../../outside"
        )
    with pytest.raises(FarmError, match="not valid"):
        SurrealClips.from_farm(download_dir=tmp_path / "cache")
    assert not (tmp_path / "outside" / "secret.mp4").exists() and not (tmp_path / "cache").exists()


def test_bare_specs_still_read_as_before(stored_clips, tmp_path):
    """Spec dicts without a record (the old call) are fetched unchecked, and `where` uses their manifests."""
    from farm.dataset import SurrealClips

    with session_scope(stored_clips["url"]) as session:
        specs = list(session.scalars(select(Clip.spec).order_by(Clip.id)))
    cache = tmp_path / "cache"
    clips = SurrealClips(stored_clips["storage"], specs, where=["frames_with_body>=0.5"], download_dir=cache)
    assert [c.name for c in clips.clips] == [specs[0]["name"]]
    for key in stored_clips["keys"][specs[0]["name"]]:
        assert (cache / key).read_bytes() == (stored_clips["files"] / key).read_bytes()
