"""Renderer benchmark: prints a table for 100-frame clips at 320x240 of the free body on built-in motion.

    .venv/bin/python benchmarks/render.py [--clips 20] [--frames 100] [--engine cycles] [--device cpu] [--small]

- bare Blender rate: Blender's own animation render of a clip's frames (no pass decoding, no files), with the
  same Blender processes as the end-to-end run (farm.render.client.ParallelRenderer), and for reference in one
  process with all threads (how the farm rendered before it shared a clip among processes);
- end-to-end rate: body evaluation + render + decoding + SURREAL output files (written while the frames
  arrive), per clip in a warm process;
- time to first frame: from render() to the first frame's passes, in a cold process (spawn + bpy import +
  scene build) and in a warm one;
- memory: RSS of the warm Blender process after each of N consecutive clips (5th vs last);
- two people: the end-to-end rate of clips holding a second person (another clip's motion, body and texture,
  placed behind-left of the first), in the same warm process, beside the one-person rate;
- issue 26's options (VARIANTS: each camera motion mode, motion blur, the correspondence file), each on the
  same --variant-clips clips as the static default, in turns in the same warm process.
Targets: end-to-end >= 25 frames/s on a 2-core machine and >= 95% of the bare rate (issue 17; issue 4 asked
8 f/s and 80%), last clip's RSS within 10% of the 5th. --small is --clips 2 --frames 4 --two-person-clips 1,
--variant-clips 1, the quick run of `make test`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (the checkout first on sys.path)
import numpy as np

from farm.assets.builtin_motions import builtin_library
from farm.core.spec import CameraSpec, ClipSpec, MotionRef
from farm.render.client import ParallelRenderer
from farm.render.job import RenderOptions, render_processes
from farm.render.prepare import prepare_clip
from scheduler.sampler import camera_motion_rand
from worker.output import ClipWriter


def clip_specs(count: int, frames: int) -> list[ClipSpec]:
    """`count` different clips (motion, texture, background, light, camera, yaw), `frames` long."""
    motions = [m for m in builtin_library() if m.split == "train" and m.frames >= 4 * frames + 8]
    specs = []
    for i in range(count):
        m = motions[(7 * i) % len(motions)]
        light = tuple(round(0.5 * ((i * 0.37 + k * 0.61) % 1.0 - 0.5), 3) for k in range(9))
        specs.append(
            ClipSpec(
                name=f"{m.name}_c0001",
                catalog="builtin",
                sequence=m.name,
                split="train",
                run=0,
                clip_index=0,
                stride=50,
                frame_start=0,
                frame_count=frames,
                motion=MotionRef(
                    uri=f"builtin:{m.name}", pose_key="poses", trans_key="trans", rate=120, frames=m.frames
                ),
                seed=i,
                body_model="free",
                gender=("female", "male")[i % 2],
                shape=(0.3 * (i % 3 - 1),) + (0.0,) * 9,
                shape_source="bench",
                texture=f"builtin:texture/{('female', 'male')[i % 2]}/train/{i:04d}",
                background=f"builtin:background/train/{i:04d}",
                light=(0.9, -0.4) + light[2:],
                camera=CameraSpec(distance=7.0 + (i % 5) * 0.4),
                zrot=(i * 1.3) % 6.28,
            )  # fmt: skip
        )
    return specs


def with_second_person(spec: ClipSpec, other: ClipSpec) -> ClipSpec:
    """`spec` with `other`'s first person standing behind and to the left of its own."""
    second = other.people[0].model_copy(update={"ground_x": -0.3, "ground_depth": 1.0, "gap": 0.2})
    return spec.model_copy(update={"others": (second,)})


def end_to_end(renderer: ParallelRenderer, spec: ClipSpec, out: Path) -> tuple[int, float]:
    """(frames, seconds) of one clip: prepare, render, write."""
    t0 = time.perf_counter()
    clip = prepare_clip(spec)
    writer = ClipWriter(out, clip.job.spec)
    result = renderer.render(clip.job, sink=writer.feed)
    writer.finish(result, clip.poses, clip.joints, clip.job.camera, result.software, clip.others)
    return clip.job.frame_count, time.perf_counter() - t0


# Issue 26's options, each beside the static default (end to end, the same clips): camera motion modes,
# motion blur and the correspondence file. The camera motions' parameters are drawn as the sampler draws them.
VARIANTS: dict[str, dict[str, object]] = {
    "static": {},
    "camera follow": {"camera_motion": "follow"},
    "camera handheld": {"camera_motion": "handheld"},
    "camera zoom": {"camera_motion": "zoom"},
    "camera follow+handheld+zoom": {"camera_motion": "follow+handheld+zoom"},
    "motion blur (shutter 0.5)": {"shutter": 0.5},
    "correspondence file": {"correspondence": True},
}


def variant(spec: ClipSpec, update: dict[str, object], seed: int) -> ClipSpec:
    """`spec` with one of VARIANTS' options (a camera motion mode drawn with its parameters)."""
    if "camera_motion" in update:
        rng = np.random.default_rng(seed)
        update = {**update, "camera_motion": camera_motion_rand(rng, str(update["camera_motion"]))}
    return spec.model_copy(update=update)


class FirstFrame:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.at: float | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.at is None and done >= 1:
            self.at = time.perf_counter() - self.start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--engine", default="cycles")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=RenderOptions.threads, help="Blender threads (0: all)")
    ap.add_argument("--two-person-clips", type=int, default=4, help="clips of two people, after the others")
    ap.add_argument(
        "--variant-clips", type=int, default=3, help="clips per option of issue 26 (camera motion, blur, ...)"
    )
    ap.add_argument(
        "--processes", type=int, default=0, help="Blender processes per clip (0: the farm's default)"
    )
    ap.add_argument(
        "--small",
        action="store_true",
        help="a quick run: --clips 2 --frames 4 --two-person-clips 1 --variant-clips 1",
    )
    args = ap.parse_args()
    if args.small:
        args.clips, args.frames, args.two_person_clips, args.variant_clips = 2, 4, 1, 1
    processes = render_processes(args.device, args.engine, args.processes)
    options = RenderOptions(
        engine=args.engine,
        device=args.device,
        threads=args.threads,
        memory_limit_mb=1 << 20,
        processes=processes,
    )
    specs = clip_specs(args.clips, args.frames)
    out = Path(tempfile.mkdtemp(prefix="bench-render-"))

    print(f"preparing {len(specs)} clips (motion, body, assets; cached after the first)...", file=sys.stderr)
    for s in specs[:2]:
        prepare_clip(s)  # build the free body and asset caches outside the timings

    renderer = ParallelRenderer(options)
    rows = []
    rss = []
    first_frame_cold = first_frame_warm = None
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        clip = prepare_clip(spec)
        t1 = time.perf_counter()
        ff = FirstFrame()
        writer = ClipWriter(out, clip.job.spec)  # encodes frames while Blender renders the next ones
        result = renderer.render(clip.job, ff, sink=writer.feed)
        t2 = time.perf_counter()
        writer.finish(result, clip.poses, clip.joints, clip.job.camera, result.software)
        t3 = time.perf_counter()
        if i == 0:
            first_frame_cold = ff.at  # includes spawning the process, importing bpy, building the scene
        elif i == 1:
            first_frame_warm = ff.at
        rss.append(renderer.rss_mb())
        T = clip.job.frame_count
        rows.append((T, t1 - t0, t2 - t1, t3 - t2, result.timings["render"]))
        print(
            f"clip {i + 1:2d}: {T / (t3 - t0):5.1f} frames/s end-to-end (prepare {t1 - t0:.2f} s, render "
            f"{t2 - t1:.2f} s, write {t3 - t2:.2f} s), Blender RSS {rss[-1]:.0f} MB",
            file=sys.stderr,
        )
    pairs = [with_second_person(specs[i], specs[(i + 1) % len(specs)]) for i in range(args.two_person_clips)]
    two = [end_to_end(renderer, spec, out) for spec in pairs]
    # Issue 26's options, each on the same clips as the static default, measured the same way in turns.
    chosen = specs[1 : 1 + args.variant_clips] or specs[:1]
    variant_rates: dict[str, list[tuple[int, float]]] = {name: [] for name in VARIANTS}
    for i, spec in enumerate(chosen):
        for name, update in VARIANTS.items():
            variant_rates[name].append(end_to_end(renderer, variant(spec, update, i), out))

    # Bare Blender: the same clip's frames, only rendered (Blender writes its EXRs; nobody reads them), by the
    # same processes, then in one process with all threads.
    job = prepare_clip(specs[1]).job
    bare = []
    for _ in range(2):
        t = time.perf_counter()
        renderer.render(job, read=False)
        bare.append(job.frame_count / (time.perf_counter() - t))
    renderer.close()
    from blender.scene import SceneRenderer  # imports bpy into this process, after the children are gone

    scene = SceneRenderer(dataclasses.replace(options, processes=1))
    scene.render(job, read=False)
    one_process = []
    for _ in range(2):
        t = time.perf_counter()
        scene.render(job, read=False)
        one_process.append(job.frame_count / (time.perf_counter() - t))
    scene.close()

    warm = rows[1:] or rows
    frames = sum(r[0] for r in warm)
    e2e = frames / sum(r[1] + r[2] + r[3] for r in warm)
    bare_rate = max(bare)
    fifth = rss[min(4, len(rss) - 1)]
    print()
    print(
        f"renderer benchmark: {args.frames}-frame clips, 320x240, {args.engine}/{args.device}, free body, "
        f"{processes} Blender process(es) per clip"
    )
    print(f"{'measure':44s} {'value':>12s}  target")
    print(f"{'bare Blender render rate':44s} {bare_rate:9.1f} f/s")
    print(f"{'  in one process, all threads':44s} {max(one_process):9.1f} f/s")
    print(f"{'end-to-end rate (warm clips 2..N)':44s} {e2e:9.1f} f/s  >= 25 f/s")
    print(f"{'end-to-end / bare':44s} {100 * e2e / bare_rate:10.0f} %   >= 95 %")
    if two:
        two_rate = sum(f for f, _ in two) / sum(s for _, s in two)
        print(
            f"{'end-to-end rate, two people per clip':44s} {two_rate:9.1f} f/s  ({100 * two_rate / e2e:.0f} % of one)"
        )
    static = sum(f for f, _ in variant_rates["static"]) / sum(t for _, t in variant_rates["static"])
    for name, runs in variant_rates.items():
        rate = sum(f for f, _ in runs) / sum(t for _, t in runs)
        label = f"  {name} ({len(runs)} clip{'s' if len(runs) > 1 else ''})"
        print(f"{label:44s} {rate:9.1f} f/s  ({100 * rate / static:.0f} % of static)")
    print(f"{'  prepare / render / write tail (s per clip)':44s} "
          f"{statistics.mean(r[1] for r in warm):.2f} / {statistics.mean(r[2] for r in warm):.2f} / "
          f"{statistics.mean(r[3] for r in warm):.2f}")  # fmt: skip
    print(f"{'time to first frame, cold process':44s} {first_frame_cold or float('nan'):10.2f} s")
    print(f"{'time to first frame, warm process':44s} {first_frame_warm or float('nan'):10.2f} s")
    print(f"{'Blender RSS after clip 5 / clip ' + str(len(rss)):44s} {fifth:6.0f} / {rss[-1]:.0f} MB")
    print(f"{'  last vs 5th':44s} {100 * (rss[-1] / fifth - 1):+10.1f} %   within 10 %")
    print(f"{'  peak over all clips':44s} {max(rss):9.0f} MB")


if __name__ == "__main__":
    main()
