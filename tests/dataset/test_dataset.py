"""farm.dataset on real renders: both conventions read back alike, one decode per clip, one-sentence errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rendering import render_both  # noqa: E402

pytestmark = pytest.mark.blender
FRAMES = 6
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    return render_both(tmp_path_factory.mktemp("conventions"), FRAMES)


def arrays(root: Path) -> dict[str, np.ndarray]:
    from farm.dataset import SurrealClips

    clips = SurrealClips(root, index="clip")
    assert len(clips) == 1
    return {k: v.numpy() for k, v in clips[0].items() if hasattr(v, "numpy")}


def test_both_conventions_give_the_same_clean_values(rendered):
    """Matched geometry: the surreal copy's camDist is one more, so both cameras stand at the same place. What
    remains is the original's missing half-pixel shift: its unflipped pixel centres are at K's (c + .5, r + .5),
    said by K's principal point (-0.5 px each) and joints2D (-0.5 px); images differ by that half pixel."""
    c, s = arrays(rendered["clean"]), arrays(rendered["surreal"])
    for key in ("R", "t", "joints3D"):
        assert np.abs(c[key] - s[key]).max() < 1e-5, key
    assert np.allclose(c["K"][:, :2, 2] - s["K"][:, :2, 2], 0.5) and np.array_equal(
        c["K"][:, :, :2], s["K"][:, :, :2]
    )
    assert np.allclose(c["joints2D"] - s["joints2D"], 0.5, atol=1e-3)
    assert np.allclose(c["R"][0], np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    assert (c["segm"] == s["segm"]).mean() > 0.99  # labels: only silhouette pixels move by the half pixel
    assert (c["parts14"] == s["parts14"]).mean() > 0.99
    both = (c["segm"] > 0) & (s["segm"] > 0)
    assert both.sum() > 1000
    depth = np.abs(c["depth"] - s["depth"])[both]
    assert np.median(depth) < 0.01 and np.percentile(depth, 90) < 0.03  # metres, planar in both
    assert (c["depth"][~(c["segm"] > 0)] == 1e10).all() and (s["depth"][~(s["segm"] > 0)] == 1e10).all()
    assert ((c["depth_bins"] == s["depth_bins"])[both]).mean() > 0.75  # bins of 45 mm: 4 mm moves some
    cos = (c["normal"] * s["normal"]).sum(-1)[both]
    assert np.median(cos) > 0.98 and np.percentile(cos, 25) > 0.95  # camera-frame normals in both
    assert (c["normal"][both][:, 2] < 0.2).mean() > 0.95 and (s["normal"][both][:, 2] < 0.2).mean() > 0.95
    moving = both.copy()
    moving[-1] = False  # the last frame holds 0 in both
    err = np.linalg.norm(c["flow"] - s["flow"], axis=-1)[moving]
    assert np.median(err) < 0.25 and (err < 1.0).mean() > 0.75  # the original's backward flow, turned forward
    assert np.median(np.linalg.norm(c["flow"], axis=-1)[moving]) > 2  # and the body does move
    assert (c["flow"][-1] == 0).all() and (s["flow"][-1] == 0).all()
    rgb = np.abs(c["rgb"].astype(int) - s["rgb"].astype(int)).mean(-1)[both]
    assert np.median(rgb) < 16  # codec noise and the half pixel; the background is mirrored in surreal's


def test_frames_of_a_clip_are_decoded_once(rendered):
    from farm.dataset import SurrealClips

    frames = SurrealClips(rendered["surreal"], where=["frames_with_body>=0.5", "split==train"])
    assert len(frames) == FRAMES
    items = [frames[i] for i in frames.clip_order(shuffle=True, seed=1)]
    assert frames.decodes == 1
    item = items[0]
    assert tuple(item["rgb"].shape) == (240, 320, 3) and tuple(item["flow"].shape) == (240, 320, 2)
    assert tuple(item["joints2D"].shape) == (24, 2) and tuple(item["K"].shape) == (3, 3)
    assert int(item["parts14"].max()) <= 14 and int(item["depth_bins"].max()) <= 19
    assert len(SurrealClips(rendered["surreal"], split="test")) == 0
    assert len(SurrealClips(rendered["surreal"], where=["frames_with_body_count>99"])) == 0


def test_a_bad_filter_is_one_sentence(rendered):
    from farm.core.errors import FarmError
    from farm.dataset import SurrealClips

    with pytest.raises(FarmError, match="unknown field 'bodies'"):
        SurrealClips(rendered["clean"], where=["bodies>3"])
    with pytest.raises(FarmError, match="is not 'field OP value'"):
        SurrealClips(rendered["clean"], where=["frames_with_body about 3"])


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_file_is_one_sentence_through_dataloader_workers(rendered, tmp_path, damage):
    from farm.dataset import ClipFileError, SurrealClips, loader

    root = tmp_path / "clips"
    shutil.copytree(rendered["clean"], root)
    (victim,) = root.rglob("*_depth.mat" if damage == "corrupt" else "*_segm.mat")
    if damage == "corrupt":
        victim.write_bytes(victim.read_bytes()[:300])
    else:
        victim.unlink()
    with pytest.raises(ClipFileError) as caught:
        list(loader(SurrealClips(root), batch_size=2, num_workers=2))
    message = str(caught.value)
    assert victim.name in message and ("corrupt" if damage == "corrupt" else "missing") in message
    assert "Traceback" not in message and "\n" not in message and "worker" not in message


def test_the_example_trains_in_smoke_mode(rendered, tmp_path):
    import subprocess

    root = tmp_path / "both"
    shutil.copytree(rendered["clean"], root / "clean")
    shutil.copytree(rendered["surreal"], root / "surreal")
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples/train_segmentation.py"), str(root), "--smoke", "--batch", "4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "mean IoU over the 14 parts: model" in run.stdout and "majority-class baseline" in run.stdout


def test_clips_in_s3_storage_read_like_local_ones(rendered, s3_credentials, tmp_path):
    import json

    from seaweed import BUCKET

    from farm.core.storage import S3Storage
    from farm.dataset import SurrealClips

    storage = S3Storage(BUCKET, "dataset-test", s3_credentials["s3_endpoint_url"])
    (manifest,) = rendered["surreal"].rglob("*_manifest.json")
    for path in manifest.parent.iterdir():
        storage.put_file(path, f"{path.parent.relative_to(rendered['surreal'])}/{path.name}")
    spec = json.loads(manifest.read_text())["spec"]
    remote = SurrealClips(storage, [spec], index="clip", download_dir=tmp_path / "cache")
    local = SurrealClips(rendered["surreal"], index="clip")
    a, b = remote[0], local[0]
    for key in ("segm", "depth", "normal", "flow", "joints2D", "K", "R", "t", "rgb"):
        assert (a[key] == b[key]).all(), key


def test_the_cli_and_the_clip_reader_do_not_import_torch():
    import subprocess

    code = "import sys, farm.cli.main, farm.dataset, farm.dataset.clips; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
