"""`farm export shards` read back by an outside client (the `webdataset` package): one clip per sample key even
where clip names repeat across runs or hold a dot, no partial shard under a final name, no stale shards."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FRAMES = 3
SEQUENCE = "walk_s01_01"
DOTTED = "walk_s01_01.v2_c0002"  # a clip name holding a dot: sequence names may hold dots
FARM = str(Path(sys.executable).parent / "farm")
SAMPLE_PARTS = {
    "rgb.png",
    "segm.png",
    "parts14.png",
    "depth.png16",
    "joints2d.npy",
    "joints3d.npy",
    "k.npy",
    "json",
}


def test_sample_keys_are_unique_and_dot_free():
    from types import SimpleNamespace

    from farm.cli.export import sample_key

    def spec(name: str, run: int = 0, catalog: str = "cmu") -> Any:
        return SimpleNamespace(catalog=catalog, split="train", run=run, name=name)

    keys = [sample_key(1, spec("a.b")), sample_key(2, spec("a_b")), sample_key(3, spec("a/b c")),
            sample_key(4, spec("a_b", run=1)), sample_key(5, spec("a_b", catalog="cmu.v2"))]  # fmt: skip
    assert keys[0] == "cmu-train-run0-a_b-id1" and keys[4] == "cmu_v2-train-run0-a_b-id5"
    assert len(set(keys)) == len(keys) and all(
        set(k) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") for k in keys
    )


def test_a_key_longer_than_ustar_allows_is_read_back_whole(tmp_path):
    import webdataset as wds

    from farm.cli.export import ShardWriter

    key = "x" * 200 + "-id1-f000"
    with ShardWriter(tmp_path, "train", 10) as writer:
        writer.write({"__key__": key.encode(), "a.txt": b"a", "b.txt": b"b"})
    (sample,) = wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False)
    assert sample["__key__"] == key and sample["a.txt"] == b"a" and sample["b.txt"] == b"b"


def runs_farm(folder: Path, frames: int) -> dict[str, str]:
    """The embedded demo setup (as tests/dataset/rendering.py's small_farm) with the first clip of SEQUENCE in
    runs 0, 1 and 2 (one name, three clips) and its second clip of run 0 as if its sequence were named
    "walk_s01_01.v2" (so the clip is DOTTED), rendered (their first
    `frames` frames) and marked done as a worker marks them; returns the FARM_ environment."""
    from farm.cli.demo import demo_settings

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FARM_")}, **demo_settings(folder)}
    code = f"""
import json
from pathlib import Path
from sqlalchemy import select
from farm.core.db import session_scope
from farm.core.files import sha256_file
from farm.core.models import Catalog, Clip, ClipStatus, Sequence
from farm.core.settings import get_settings
from farm.core.spec import ClipSpec
from farm.core.storage import open_storage
from farm.render.client import BlenderProcessRenderer
from farm.render.job import RenderOptions
from scheduler.catalogs import builtin_sequences, register_catalog
from scheduler.enqueue import store_clips
from scheduler.plan import clips_in_run
from worker.output import render_clip_files

settings = get_settings()
with session_scope(settings.database_url) as session:
    register_catalog(session, "builtin", "builtin", "builtin:", builtin_sequences())
with session_scope(settings.database_url) as session:
    catalog, seq = session.execute(
        select(Catalog.name, Sequence).join(Catalog).where(Sequence.name == {SEQUENCE!r})
    ).one()
    plan = [(catalog, seq, clips_in_run(seq.mocap_frames, seq.mocap_rate, run)[0]) for run in (0, 1, 2)]
    plan.append((catalog, seq, clips_in_run(seq.mocap_frames, seq.mocap_rate, 0)[1]))
    ids = store_clips(session, plan, settings.seed, settings.body_model, convention=settings.convention)
    dotted = session.get(Clip, ids[-1])
    dotted.name, dotted.spec = {DOTTED!r}, {{**dotted.spec, "name": {DOTTED!r}, "sequence": "walk_s01_01.v2"}}
storage = open_storage(settings)
root = Path(settings.storage_url)
with BlenderProcessRenderer(RenderOptions.from_settings(settings)) as renderer:
    for clip_id in ids:
        with session_scope(settings.database_url) as session:
            clip = session.get(Clip, clip_id)
            spec = ClipSpec.model_validate(clip.spec)
            files = render_clip_files(spec, renderer, root, frames={frames}, settings=settings)
            manifest = json.loads((root / files.files[-1]).read_text())
            clip.spec = manifest["spec"]
            clip.status = ClipStatus.DONE
            clip.frames_done = files.frames
            clip.output_uri = storage.uri(spec.output_dir)
            clip.checksums = {{str(f): {{"sha256": sha256_file(root / f), "size": (root / f).stat().st_size}}
                              for f in files.files}}
            clip.qc = files.qc
            clip.frames_with_body = files.qc["frames_with_body"]
"""
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=folder, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return env


@pytest.fixture(scope="module")
def farm_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("farm")
    return folder, runs_farm(folder, FRAMES)


def export(env: dict[str, str], out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [FARM, "export", "shards", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.blender
def test_three_runs_of_one_sequence_read_back_as_three_clips_with_their_own_labels(farm_dir):
    import webdataset as wds

    from farm.dataset.clips import load_clip, read_manifest
    from farm.dataset.shards import decode_sample

    folder, env = farm_dir
    out = folder / "shards"
    export(env, out, "--frames-per-shard", "5", "--seed", "3")
    shards = sorted(str(p) for p in out.glob("train-*.tar"))
    by_clip: dict[int, dict[int, dict[str, Any]]] = {}
    for raw in wds.WebDataset(shards, shardshuffle=False):
        assert SAMPLE_PARTS <= set(raw), (raw["__key__"], set(raw))  # whole: no key split at a dot
        sample = decode_sample(raw)  # the compact members into load_clip's arrays
        meta = sample["meta"]
        assert "." not in sample["__key__"] and sample["__key__"].endswith(f"-f{meta['frame']:03d}")
        assert meta["frame"] not in by_clip.setdefault(meta["clip_id"], {})  # one sample per frame
        by_clip[meta["clip_id"]][meta["frame"]] = sample
    names = {clip_id: next(iter(frames.values()))["clip"] for clip_id, frames in by_clip.items()}
    assert sorted(names.values()) == [DOTTED] + [f"{SEQUENCE}_c0001"] * 3  # one name in three runs
    for clip_id, frames in by_clip.items():
        assert sorted(frames) == list(range(FRAMES))
        meta = frames[0]["meta"]
        clip_folder = folder / "output" / "builtin" / meta["split"] / f"run{meta['run']}" / meta["sequence"]
        own = load_clip(read_manifest(clip_folder, meta["clip"]))
        for f, sample in frames.items():
            for key in ("segm", "parts14", "joints2D", "rgb"):
                assert np.array_equal(sample[key], own[key][f]), (names[clip_id], meta["run"], key, f)
    runs = {frames[0]["run"]: frames for frames in by_clip.values() if frames[0]["clip"] != DOTTED}
    assert sorted(runs) == [0, 1, 2]
    # the runs' clips differ, so a sample holding another run's labels would have failed above
    assert not np.array_equal(runs[0][0]["joints2D"], runs[1][0]["joints2D"])
    assert not np.array_equal(runs[1][0]["joints2D"], runs[2][0]["joints2D"])


@pytest.mark.blender
def test_an_export_replaces_an_earlier_larger_one_and_says_so(farm_dir):
    folder, env = farm_dir
    out = folder / "replace"
    first = export(env, out, "--frames-per-shard", "1")
    assert len(list(out.glob("train-*.tar"))) == 4 * FRAMES and "removed 0 stale shards" in first.stdout
    (out / "test-000000.tar").write_bytes(b"an earlier export's test split")
    (out / ".train-000099.tar.partial").write_bytes(b"left by a killed export")
    keep = [out / "notes.txt", out / "train-extra.tar", out / "valid-000000.tar"]
    for path in keep:
        path.write_text("not a shard of this command")
    second = export(env, out, "--frames-per-shard", "5")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in keep] + ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    )
    stale = 4 * FRAMES - 3 + 2
    assert f"wrote 3 shards, removed {stale} stale shards of an earlier export" in second.stdout


@pytest.mark.blender
def test_a_failed_export_leaves_no_partial_shard_under_a_final_name(farm_dir, farm, farm_env, monkeypatch):
    from farm.cli.export import ARRAYS

    folder, env = farm_dir
    farm_env(**{k.removeprefix("FARM_").lower(): v for k, v in env.items() if k.startswith("FARM_")})
    out = folder / "failed"
    calls = {"n": 0}
    addfile = tarfile.TarFile.addfile

    def failing(self: tarfile.TarFile, info: tarfile.TarInfo, data: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] == (3 + 1) * (len(ARRAYS) + 2) + 5:  # in the middle of the second shard's second sample
            raise OSError("no space left on device")
        addfile(self, info, data)

    monkeypatch.setattr(tarfile.TarFile, "addfile", failing)
    with pytest.raises(OSError, match="no space left"):
        farm("export", "shards", "--out", str(out), "--frames-per-shard", "3")
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar"]  # the partial one is gone
    with tarfile.open(out / "train-000000.tar") as tar:  # and the one left is whole
        members = tar.getmembers()
    assert len(members) == 3 * (len(ARRAYS) + 2) and len({m.name.split(".", 1)[0] for m in members}) == 3
