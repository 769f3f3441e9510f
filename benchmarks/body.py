"""The body model: build time of the free bodies, and time to evaluate a 100-frame clip.

    .venv/bin/python benchmarks/body.py [--cache DIR] [--rebuild] [-n 10] [--small]

Builds the free bodies into a scratch cache (or uses --cache DIR, building only if missing), then evaluates a
100-frame clip of random poses per gender N times and prints the medians, with a texture's generation time.
Target: a 100-frame clip in under 1 s on 2 CPU cores (the renderer needs >= 8 fps end to end).
--small is -n 1, the quick run of `make test` (the build, about half a minute, stays whole).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a scratch one)")
    parser.add_argument("--rebuild", action="store_true", help="build even if the cache has the bodies")
    parser.add_argument("-n", type=int, default=10, help="evaluations per gender")
    parser.add_argument("--small", action="store_true", help="a quick run: -n 1")
    args = parser.parse_args()
    if args.small:
        args.n = 1

    import torch

    from farm.assets.body import load_body_model
    from farm.assets.free_body import build_free_bodies, free_body_dir
    from farm.assets.textures import load_texture
    from farm.core.settings import Settings

    cache = args.cache or Path(tempfile.mkdtemp(prefix="body-bench-"))
    settings = Settings(cache_dir=cache)
    folder = free_body_dir(cache)
    build_s = float("nan")
    if args.rebuild or not (folder / "SMPL_NEUTRAL.npz").exists():
        t0 = time.perf_counter()
        build_free_bodies(folder)
        build_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.3, (100, 72)).astype(np.float32)
    trans = np.cumsum(rng.normal(0, 0.01, (100, 3)), axis=0).astype(np.float32)
    rows = []
    for gender in ("female", "male", "neutral"):
        t0 = time.perf_counter()
        model = load_body_model("free", gender, settings)
        load_s = time.perf_counter() - t0
        betas = rng.normal(0, 1, 10)
        model.evaluate(poses, betas, trans)  # warm-up
        times = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            model.evaluate(poses, betas, trans)
            times.append(time.perf_counter() - t0)
        info = json.loads(np.load(model.path)["build_info"].item())
        rows.append((gender, model.num_vertices, len(model.faces), load_s, statistics.median(times), info))
    t0 = time.perf_counter()
    load_texture("builtin:texture/female/train/0000", settings=settings)
    first_tex = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_texture("builtin:texture/female/train/0001", settings=settings)
    next_tex = time.perf_counter() - t0

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cache {cache}")
    print(
        f"build (3 genders, 600 sampled bodies each): {build_s:.1f} s"
        if build_s == build_s
        else "build: cached"
    )
    print(f"{'gender':8s} {'vertices':>8s} {'faces':>6s} {'load s':>7s} {'100 frames s':>12s} {'fps':>6s} "
          f"{'expl. var.':>10s} {'J rms mm':>8s}")  # fmt: skip
    for gender, nv, nf, load_s, clip_s, info in rows:
        print(
            f"{gender:8s} {nv:8d} {nf:6d} {load_s:7.2f} {clip_s:12.3f} {100 / clip_s:6.0f} "
            f"{info['explained_variance_10']:10.5f} {info['joint_regressor_rms_m'] * 1000:8.1f}"
        )
    print(f"texture 512x512: first {first_tex:.2f} s (UV layout included), then {next_tex:.3f} s each")


if __name__ == "__main__":
    main()
