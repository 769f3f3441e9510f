"""`farm export index` and `farm export shards` on a small farm of the embedded demo setup (real Blender)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rendering import small_farm  # noqa: E402

pytestmark = pytest.mark.blender
FRAMES = 3
FARM = str(Path(sys.executable).parent / "farm")
SAMPLE_PARTS = {"rgb.png", "segm.png", "parts14.png", "inst.png", "depth.png16", "depth_bins.png", "normal.png16",
                "flow.png16", "joints2d.npy", "joints3d.npy", "visible.npy", "bbox.npy", "k.npy", "r.npy", "t.npy",
                "json"}  # fmt: skip
RAW_PARTS = {"rgb.jpg", "json"} | {f"{k}.npy" for k in ("segm", "parts14", "inst", "depth", "depth_bins", "normal",
             "flow", "joints2d", "joints3d", "visible", "bbox", "k", "r", "t")}  # fmt: skip


@pytest.fixture(scope="module")
def farm_dir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("farm")
    return folder, small_farm(folder, FRAMES)


def farm(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FARM, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_index_has_one_row_per_done_clip(farm_dir):
    import pandas as pd

    folder, env = farm_dir
    run = farm(env, folder, "export", "index", "--out", str(folder / "index.parquet"))
    assert run.returncode == 0, run.stderr
    table = pd.read_parquet(folder / "index.parquet")
    assert len(table) == 3 and sorted(table["split"]) == ["test", "train", "train"]
    assert (table["frames_with_body"] == 1.0).all() and (table["frames_with_body_count"] == FRAMES).all()
    for kind in ("mp4", "info", "depth", "segm", "gtflow", "normal", "manifest"):
        assert table[f"{kind}_uri"].str.startswith(str(folder / "output")).all()
        assert (
            table[f"{kind}_sha256"].str.fullmatch("[0-9a-f]{64}").all() and (table[f"{kind}_size"] > 0).all()
        )
    kept = farm(
        env, folder, "export", "index", "--out", str(folder / "test.parquet"), "--where", "split==test"
    )
    assert kept.returncode == 0 and len(pd.read_parquet(folder / "test.parquet")) == 1
    none = farm(
        env,
        folder,
        "export",
        "index",
        "--out",
        str(folder / "none.parquet"),
        "--where",
        "frames_with_body>=1.5",
    )
    assert none.returncode == 0 and len(pd.read_parquet(folder / "none.parquet")) == 0


@pytest.mark.parametrize("where", ["frames_with_body>>0.9", "bodies>3", "split>=train"])
def test_a_bad_filter_is_one_sentence(farm_dir, where):
    folder, env = farm_dir
    run = farm(env, folder, "export", "index", "--out", str(folder / "bad.parquet"), "--where", where)
    assert run.returncode == 2 and "Traceback" not in run.stderr  # bad usage: the filter's form is fixed
    assert where in run.stderr and len(run.stderr.strip().splitlines()) <= 2


def test_shards_are_read_back_by_webdataset_complete_and_deterministic(farm_dir):
    import webdataset as wds

    folder, env = farm_dir
    for name in ("a", "b"):
        run = farm(
            env,
            folder,
            "export",
            "shards",
            "--out",
            str(folder / name),
            "--frames-per-shard",
            "4",
            "--seed",
            "7",
        )
        assert run.returncode == 0, run.stderr
    train = sorted(p.name for p in (folder / "a").glob("train-*.tar"))
    assert train == ["train-000000.tar", "train-000001.tar"] and [
        p.name for p in (folder / "a").glob("test-*")
    ] == ["test-000000.tar"]
    for shard in (folder / "a").iterdir():
        assert (
            shard.read_bytes() == (folder / "b" / shard.name).read_bytes()
        )  # the same seed, the same shards
    seen = {}
    for split, pattern in (("train", "train-{000000..000001}.tar"), ("test", "test-000000.tar")):
        dataset = wds.WebDataset(str(folder / "a" / pattern), shardshuffle=False).decode("rgb8")
        for sample in dataset:
            assert set(sample) == SAMPLE_PARTS | {"__key__", "__url__", "__local_path__"}, set(sample)
            assert sample["json"]["split"] == split and sample["json"]["convention"] == "clean"
            assert sample["json"]["encoding"] == "compact"
            assert sample["rgb.png"].shape == (240, 320, 3) and sample["k.npy"].shape == (3, 3)
            assert np.isfinite(sample["joints2d.npy"]).all()
            seen[sample["__key__"]] = split
    assert len(seen) == 3 * FRAMES and sum(s == "test" for s in seen.values()) == FRAMES


def clip_items(folder: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """load_clip of a sample's clip, from the farm's output folder."""
    from farm.dataset.clips import load_clip, read_manifest

    clip_folder = folder / "output" / "builtin" / meta["split"] / f"run{meta['run']}" / meta["sequence"]
    return load_clip(read_manifest(clip_folder, meta["clip"]))


def test_shards_decode_into_load_clips_items_within_the_stated_bounds(farm_dir):
    """Real Blender clips through `farm export shards` (compact, the default), read back by webdataset and
    farm.dataset.shards.decode_sample: exact where exactness matters, within the stated bounds elsewhere."""
    from farm.dataset import shards as S

    folder, env = farm_dir
    run = farm(env, folder, "export", "shards", "--out", str(folder / "compact"), "--frames-per-shard", "4")
    assert run.returncode == 0, run.stderr
    clips: dict[int, dict[str, np.ndarray]] = {}
    frames = 0
    for item in S.shard_dataset(
        sorted(str(p) for p in (folder / "compact").glob("*.tar")), shardshuffle=False
    ):
        meta = item["meta"]
        if meta["clip_id"] not in clips:
            clips[meta["clip_id"]] = clip_items(folder, meta)
        own = {k: v[item["frame"]] for k, v in clips[meta["clip_id"]].items()}
        assert set(own) <= set(item) and item["clip"] == meta["clip"] and item["split"] == meta["split"]
        for key in ("rgb", "segm", "parts14", "inst", "depth_bins", "joints2D", "joints3D", "visible", "bbox",
                    "K", "R", "t"):  # fmt: skip
            assert item[key].dtype == own[key].dtype and np.array_equal(
                item[key], own[key], equal_nan=True
            ), key
        body = own["depth"] < 5e9
        assert body.any() and (item["depth"][~body] == np.float32(1e10)).all()
        assert np.abs(item["depth"][body] - own["depth"][body]).max() <= S.DEPTH_BOUND_M
        assert np.abs(item["flow"] - own["flow"]).max() <= S.FLOW_BOUND_PX
        assert (item["flow"][own["flow"] == 0] == 0).all()
        zero = (own["normal"] == 0).all(-1)
        assert (item["normal"][zero] == 0).all()
        assert S.normal_angle_deg(item["normal"][~zero], own["normal"][~zero]).max() <= S.NORMAL_BOUND_DEG
        frames += 1
    assert frames == 3 * FRAMES


def test_the_raw_encoding_stays_available_and_exact(farm_dir):
    import webdataset as wds

    from farm.dataset.shards import decode_sample

    folder, env = farm_dir
    out = folder / "raw"
    run = farm(env, folder, "export", "shards", "--out", str(out), "--encoding", "raw", "--image", "jpg")
    assert run.returncode == 0, run.stderr
    shards = sorted(str(p) for p in out.glob("*.tar"))
    for sample in wds.WebDataset(shards, shardshuffle=False):
        assert set(sample) == RAW_PARTS | {"__key__", "__url__", "__local_path__"}, set(sample)
        item = decode_sample(sample)
        own = {k: v[item["frame"]] for k, v in clip_items(folder, item["meta"]).items()}
        for key in set(own) - {"rgb"}:  # JPEG RGB is lossy
            assert item[key].dtype == own[key].dtype and np.array_equal(item[key], own[key]), key
        assert item["meta"]["encoding"] == "raw" and item["rgb"].shape == (240, 320, 3)
