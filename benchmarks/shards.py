"""Training shards: bytes a frame of `farm export shards` per encoding, and each key's round-trip error.

    .venv/bin/python benchmarks/shards.py [--frames 100] [--keep DIR] [--small]

Renders the demo's clips as tests/dataset/rendering.py's small_farm does (two train clips and a test clip, the
test clip with correspondence: uv and canon), their first --frames frames, with real Blender; exports them with
`farm export shards` as compact with PNG RGB (the default), compact with JPEG RGB and raw; prints each one's
bytes a frame (the tar files over the frames, tar headers and json included) and the paper's plan at that rate
(6,536,752 frames); then reads the compact shards back with the `webdataset` package and
farm.dataset.shards.decode_sample and prints, key by key, the largest error against the clip files (load_clip)
next to its stated bound (farm/dataset/shards.py). Fails (exit 1) when a key is past its bound.
--small is --frames 10, the quick run of `make test`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (the checkout, then tests/, first on sys.path)
import numpy as np

PAPER_FRAMES = 6_536_752
EXACT = ("segm", "parts14", "inst", "depth_bins", "joints2D", "joints3D", "visible", "bbox", "K", "R", "t")


def render(folder: Path, frames: int) -> dict[str, str]:
    sys.path.insert(0, str(_paths.ROOT / "tests" / "dataset"))
    from rendering import small_farm

    return small_farm(folder, frames, correspondence=True)


def export(env: dict[str, str], out: Path, *args: str) -> float:
    farm = str(Path(sys.executable).parent / "farm")
    t0 = time.perf_counter()
    run = subprocess.run(
        [farm, "export", "shards", "--out", str(out), *args], env=env, capture_output=True, text=True
    )
    if run.returncode != 0:
        sys.exit(f"farm export shards {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - t0


def errors(out: Path, output_root: Path) -> tuple[dict[str, float], int, float]:
    """{key: largest error} over every sample of the shards in `out` against load_clip; the samples; seconds."""
    import webdataset as wds

    from farm.dataset import shards as S
    from farm.dataset.clips import load_clip, read_manifest
    from farm.dataset.shards import decode_sample

    worst: dict[str, float] = {}
    clips: dict[int, dict[str, np.ndarray]] = {}
    samples, t0 = 0, time.perf_counter()
    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    for item in wds.WebDataset(urls, shardshuffle=False).map(decode_sample):
        meta = item["meta"]
        if meta["clip_id"] not in clips:
            folder = output_root / "builtin" / meta["split"] / f"run{meta['run']}" / meta["sequence"]
            clips[meta["clip_id"]] = load_clip(read_manifest(folder, meta["clip"]))
        own = {k: v[item["frame"]] for k, v in clips[meta["clip_id"]].items()}
        assert set(own) <= set(item), (item["__key__"], set(own) - set(item))
        samples += 1

        def note(key: str, value: float) -> None:
            worst[key] = max(worst.get(key, 0.0), float(value))

        for key in EXACT + ("rgb",):
            note(key, 0.0 if np.array_equal(item[key], own[key], equal_nan=True) else np.inf)
        body = own["depth"] < 5e9
        note("depth", np.abs(item["depth"][body] - own["depth"][body]).max(initial=0.0))
        note("depth background", 0.0 if (item["depth"][~body] == 1e10).all() else np.inf)
        note("flow", np.abs(item["flow"] - own["flow"]).max())
        still = own["flow"] == 0  # the static background, the last frame
        note("flow zeros", 0.0 if (item["flow"][still] == 0).all() else np.inf)
        zero = (own["normal"] == 0).all(-1)
        note("normal", S.normal_angle_deg(item["normal"][~zero], own["normal"][~zero]).max(initial=0.0))
        note("normal background", 0.0 if (item["normal"][zero] == 0).all() else np.inf)
        for key in ("uv", "canon"):
            if key in own:
                nan = np.isnan(own[key])
                note(f"{key} NaN", 0.0 if np.array_equal(np.isnan(item[key]), nan) else np.inf)
                note(key, np.abs(item[key][~nan] - own[key][~nan]).max(initial=0.0))
    return worst, samples, time.perf_counter() - t0


def sample_sizes(out: Path) -> tuple[list[int], list[int]]:
    """The bytes each sample takes in the tar files of `out` (512-byte headers and padding included): those without
    uv and canon, and those with them."""
    import tarfile

    sizes: dict[str, int] = {}
    corr: set[str] = set()
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                sizes[key] = sizes.get(key, 0) + 512 + -(-member.size // 512) * 512
                if ext.startswith("uv."):
                    corr.add(key)
    return [v for k, v in sizes.items() if k not in corr], [v for k, v in sizes.items() if k in corr]


def member_sizes(out: Path) -> dict[str, tuple[int, int]]:
    """{extension: (bytes, members)} over the shards in `out`, largest first."""
    import tarfile

    sizes: dict[str, list[int]] = {}
    for path in sorted(out.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                size = sizes.setdefault(member.name.split(".", 1)[1], [0, 0])
                size[0] += member.size
                size[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1][0] / kv[1][1])}


def rgb_error(out: Path, output_root: Path) -> tuple[float, float]:
    """The mean and largest |error| of the shards' RGB against the clips' decoded mp4 frames."""
    import webdataset as wds

    from farm.dataset.clips import load_clip, read_manifest
    from farm.dataset.shards import decode_sample

    rgb: dict[int, np.ndarray] = {}
    total, count, largest = 0.0, 0, 0.0
    for item in wds.WebDataset([str(p) for p in sorted(out.glob("*.tar"))], shardshuffle=False).map(
        decode_sample
    ):
        meta = item["meta"]
        if meta["clip_id"] not in rgb:
            folder = output_root / "builtin" / meta["split"] / f"run{meta['run']}" / meta["sequence"]
            rgb[meta["clip_id"]] = load_clip(read_manifest(folder, meta["clip"]))["rgb"]
        diff = np.abs(item["rgb"].astype(np.int16) - rgb[meta["clip_id"]][item["frame"]])
        total, count, largest = total + diff.sum(), count + diff.size, max(largest, float(diff.max()))
    return total / count, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames rendered of each clip")
    parser.add_argument("--keep", type=Path, default=None, help="render and export into DIR and keep it")
    parser.add_argument("--small", action="store_true", help="a quick run: --frames 10")
    args = parser.parse_args()
    if args.small:
        args.frames = 10

    from farm.dataset import shards as S

    folder = args.keep or Path(tempfile.mkdtemp(prefix="shards-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = render(folder, args.frames)
    render_s = time.perf_counter() - t0

    rows = []
    for label, options in (
        ("compact, PNG RGB (default)", ("--encoding", "compact", "--image", "png")),
        ("compact, JPEG RGB (q95)", ("--encoding", "compact", "--image", "jpg")),
        ("raw, PNG RGB", ("--encoding", "raw", "--image", "png")),
    ):
        out = folder / "-".join(options[1::2])
        seconds = export(env, out, *options)
        rows.append((label, out, sum(p.stat().st_size for p in out.glob("*.tar")), seconds))

    worst, samples, read_s = errors(rows[0][1], folder / "output")
    jpg_mean, jpg_max = rgb_error(rows[1][1], folder / "output")
    print(f"{samples} frames (3 clips of {args.frames} at 320x240, one with correspondence); rendered in "
          f"{render_s:.0f} s; {folder}")  # fmt: skip
    print(
        "KB a frame: the tar bytes of a sample (headers, padding and json included), without correspondence (as"
    )
    print("the paper's clips), with it (uv and canon), and over all; the paper's plan at the rate without it")
    print(
        f"{'encoding':28s} {'KB a frame':>10s} {'with corr.':>10s} {'all':>7s} {'paper plan TB':>13s} {'export s':>8s}"
    )
    for label, out, size, seconds in rows:
        plain, corr = sample_sizes(out)
        rate = np.mean(plain)
        print(
            f"{label:28s} {rate / 1e3:10.1f} {np.mean(corr) / 1e3:10.1f} {size / samples / 1e3:7.1f} "
            f"{rate * PAPER_FRAMES / 1e12:13.2f} {seconds:8.1f}"
        )
    members = member_sizes(rows[0][1])
    print(
        "compact, PNG RGB, bytes a frame by member (tar headers and padding apart; uv and canon: the clips with them):"
    )
    print("  " + ", ".join(f"{ext} {size / count / 1e3:.1f} KB" for ext, (size, count) in members.items()))
    bounds: dict[str, tuple[float, str, str]] = {
        "depth": (S.DEPTH_BOUND_M * 1e3, "mm", "depth"),
        "flow": (S.FLOW_BOUND_PX, "px", "flow"),
        "normal": (S.NORMAL_BOUND_DEG, "deg", "normal"),
        "uv": (S.UV_BOUND, "", "uv"),
        "canon": (S.CANON_BOUND_M * 1e3, "mm", "canon"),
    }
    print(
        f"round trip of the compact PNG shards against load_clip (webdataset + decode_sample, {read_s:.1f} s):"
    )
    print(f"{'key':20s} {'largest error':>14s} {'bound':>12s}  ok")
    failed = []
    for key in sorted(worst, key=lambda k: (k not in bounds, k)):
        value = worst[key]
        if key in bounds:
            bound, unit, _ = bounds[key]
            shown = value * 1e3 if key in ("depth", "canon") else value
            ok = shown <= bound
            print(f"{key:20s} {shown:14.4g} {bound:9.4g} {unit:>2s}  {'yes' if ok else 'NO'}")
        else:
            ok = value == 0.0
            print(f"{key:20s} {'equal' if ok else 'DIFFERENT':>14s} {'equal':>12s}  {'yes' if ok else 'NO'}")
        if not ok:
            failed.append(key)
    print(
        f"JPEG RGB (q95) against the mp4's frames: mean |error| {jpg_mean:.2f}, largest {jpg_max:.0f} (of 255)"
    )
    if failed:
        sys.exit(f"past their bounds: {', '.join(failed)}")


if __name__ == "__main__":
    main()
