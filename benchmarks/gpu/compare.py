"""The GPU benchmark's table and comparison (run by run.sh with the bundle's own Python).

    python compare.py WORK [--reference DIR]

WORK holds run.sh's runs: NAME.json (`farm jobs render --report`), out-NAME/ (its clips) and NAME.mem (the
GPU's memory in MiB every 200 ms while it rendered). Each run is compared with the reference (default:
out-cycles-cpu): Cycles on any device must give the reference's segmentation exactly; EEVEE within
farm.render.job.EEVEE_BOUNDS; depth, normals and flow of every run within EEVEE_BOUNDS (Cycles on the CPU:
exactly). Exits 1 when a comparison fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.io

from farm.render.job import EEVEE_BOUNDS as B


def frames(mat: Path, key: str) -> list[np.ndarray]:
    m = scipy.io.loadmat(mat)
    return [m[f"{key}_{i}"] for i in range(1, sum(k.startswith(f"{key}_") for k in m) + 1)]


def compare_clip(run: Path, ref: Path, exact: bool, eevee: bool) -> list[str]:
    """Problems of one clip's passes against the reference's (empty: within the bounds)."""
    problems = []
    stem = run.name.removesuffix("_segm.mat")
    load = {k: (frames(run.with_name(f"{stem}_{k}.mat"), k), frames(ref.with_name(f"{stem}_{k}.mat"), k))
            for k in ("segm", "depth", "normal", "gtflow")}  # fmt: skip
    for t, (s, s0) in enumerate(zip(*load["segm"], strict=True)):
        body = s0 > 0
        differ = float((s != s0)[body].mean()) if body.any() else 0.0
        if (exact or not eevee) and not np.array_equal(s, s0):
            problems.append(f"frame {t + 1}: segmentation differs at {int((s != s0).sum())} pixels")
        elif differ > B["segm_differs"]:
            problems.append(f"frame {t + 1}: {differ:.2%} of body pixels have another label")
        both = body & (s > 0)
        d, d0 = load["depth"][0][t], load["depth"][1][t]
        n, n0 = load["normal"][0][t], load["normal"][1][t]
        f, f0 = load["gtflow"][0][t], load["gtflow"][1][t]
        if exact:
            for what, a, b in (("depth", d, d0), ("normals", n, n0), ("flow", f, f0)):
                if not np.array_equal(a, b):
                    problems.append(f"frame {t + 1}: {what} differ")
            continue
        within = float((np.abs(d - d0)[both] <= B["depth_m"]).mean()) if both.any() else 1.0
        if within < B["depth_within"]:
            problems.append(
                f"frame {t + 1}: depth within {B['depth_m']} m on only {within:.2%} of body pixels"
            )
        cos = (n * n0).sum(-1)[both]
        if cos.size and float((1 - cos).max()) > B["normal"]:
            problems.append(f"frame {t + 1}: normals differ by 1 - cosine {float((1 - cos).max()):.2g}")
        err = np.linalg.norm(f - f0, axis=-1)[both]
        bound = B["flow_px"] + B["flow_relative"] * np.linalg.norm(f0, axis=-1)[both]
        if err.size and bool((err > bound).any()):
            problems.append(f"frame {t + 1}: flow off by up to {float(err.max()):.3g} px")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--reference", type=Path)
    args = parser.parse_args()
    work: Path = args.work
    reference = args.reference or work / "out-cycles-cpu"
    rows, failed = [], False
    print(f"{'run':<14}{'clips':>6}{'frames':>7}{'start s':>9}{'1st frame s':>12}{'Blender fps':>12}"
          f"{'end-to-end fps':>15}{'GPU MiB':>9}  device")  # fmt: skip
    for report in sorted(work.glob("*.json")):
        name = report.stem
        data = json.loads(report.read_text())
        start, clips = data["clips"][0]["start_s"], data["clips"][1:]
        n = sum(c["frames"] for c in clips)
        blender = sum(c["blender"].get("render", 0.0) for c in clips)
        e2e = sum(c["end_to_end_s"] for c in clips)
        mem = work / f"{name}.mem"
        values = [int(v) for v in mem.read_text().split() if v.isdigit()] if mem.exists() else []
        print(f"{name:<14}{len(clips):>6}{n:>7}{start:>9.1f}{clips[0]['first_frame_s'] or 0:>12.2f}"
              f"{n / blender if blender else 0:>12.1f}{n / e2e if e2e else 0:>15.1f}"
              f"{max(values) if values else '-':>9}  {clips[0]['device']}")  # fmt: skip
        rows.append(name)
    print(f"\ncompared with {reference}:")
    for name in rows:
        out = work / f"out-{name}"
        exact = name == "cycles-cpu"
        problems = []
        segms = sorted(reference.rglob("*_segm.mat"))
        if not segms:
            problems.append(f"the reference {reference} holds no clips")
        for ref in segms:
            run = out / ref.relative_to(reference)
            if not run.exists():
                problems.append(f"{run.name} is missing")
                continue
            problems += [f"{ref.name}: {p}" for p in compare_clip(run, ref, exact, name.startswith("eevee"))]
        failed |= bool(problems)
        rule = "exact" if exact else "segmentation exact, " if not name.startswith("eevee") else ""
        print(
            f"  {name}: {'PASS' if not problems else 'FAIL'} ({rule or 'EEVEE bounds'}"
            f"{'' if exact or name.startswith('eevee') else 'the rest within EEVEE bounds'})"
        )
        for p in problems[:10]:
            print(f"    {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
