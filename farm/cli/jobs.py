"""`farm jobs`: render jobs that travel. `prepare` evaluates the bodies here (torch) and freezes each clip's
job in a folder; `render` renders such a folder anywhere the farm and bpy run (a `--no-torch` bundle), and
writes the files a worker writes for the same spec.

A job folder holds one `<clip>.npz` (plain arrays, read without pickle) and one `<clip>.json` (the spec and
the camera's scalars) per clip.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from farm.core.choices import Device, Engine
from farm.core.errors import FarmError

if TYPE_CHECKING:
    from farm.render.prepare import PreparedClip

app = typer.Typer(help="Render jobs prepared here and rendered elsewhere (a bundle, a GPU machine).",
                  no_args_is_help=True)  # fmt: skip
FORMAT = 1
MESH = ("vertices", "faces", "vt", "ft", "face_parts", "texture")


def save_job(folder: Path, clip: PreparedClip) -> None:
    job, camera = clip.job, clip.job.camera
    arrays: dict[str, np.ndarray] = {k: getattr(job, k) for k in MESH}
    arrays.update(background=job.background, poses=clip.poses, joints=clip.joints)
    arrays.update({f"camera_{k}": getattr(camera, k) for k in ("K", "R", "t", "world_from_body")})
    for i, (mesh, motion) in enumerate(zip(job.others, clip.others, strict=True)):
        arrays.update({f"other{i}_{k}": getattr(mesh, k) for k in (*MESH, "world_from_body")})
        arrays.update({f"other{i}_poses": motion.poses, f"other{i}_joints": motion.joints})
    name = job.spec.name
    np.savez(folder / f"{name}.npz", **arrays)
    meta = {
        "format": FORMAT,
        "spec": job.spec.model_dump(mode="json"),
        "camera": {"width": camera.width, "height": camera.height, "pixel_centre": camera.pixel_centre},
        "others": len(job.others),
    }
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_job(meta_path: Path) -> PreparedClip:
    """A clip saved by save_job. Refuses (one sentence) a file that is not one."""
    from farm.core.spec import parse_spec
    from farm.render.camera import Camera
    from farm.render.job import BodyMesh, RenderJob
    from farm.render.prepare import PersonMotion, PreparedClip

    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FORMAT}")
        spec = parse_spec(meta["spec"])
        with np.load(meta_path.with_suffix(".npz"), allow_pickle=False) as npz:
            a = {k: npz[k] for k in npz.files}
        cam = meta["camera"]
        camera = Camera(
            a["camera_K"], a["camera_R"], a["camera_t"], a["camera_world_from_body"],
            int(cam["width"]), int(cam["height"]), float(cam["pixel_centre"]),
        )  # fmt: skip
        job = RenderJob(spec=spec, **{k: a[k] for k in MESH}, background=a["background"], camera=camera)
        clip = PreparedClip(job, a["poses"], a["joints"])
        for i in range(int(meta["others"])):
            job.others.append(BodyMesh(**{k: a[f"other{i}_{k}"] for k in (*MESH, "world_from_body")}))
            clip.others.append(PersonMotion(a[f"other{i}_poses"], a[f"other{i}_joints"]))
    except FarmError:
        raise
    except Exception as e:  # a damaged or foreign file: any of json, npz, key or type errors
        raise FarmError(f"{meta_path} is not a render job of this farm ({type(e).__name__}: {e})") from e
    return clip


@app.command("prepare")
def prepare(
    out: Annotated[Path, typer.Argument(help="The job folder to write (must not exist).")],
    sequence: Annotated[str, typer.Option(help="Sequence name (or catalog/sequence).")],
    run: Annotated[int, typer.Option(min=0, max=2, help="Run 0, 1 or 2.")] = 0,
    clips: Annotated[int, typer.Option(min=1, help="Clips 0..N-1 of the sequence's run.")] = 1,
    frames: Annotated[int | None, typer.Option(min=1, help="Only each clip's first N frames.")] = None,
) -> None:
    """Evaluate the bodies and freeze N clips' render jobs into a folder (specs from the database, else
    planned now with the same seed rule, as `farm render-clip`)."""
    from farm.cli.console import out as stdout
    from farm.cli.render_clip import resolve_spec
    from farm.core.settings import get_settings
    from farm.render.prepare import prepare_clip

    out = out.absolute()
    if out.exists():
        raise FarmError(f"{out} already exists; name a new folder or remove it first")
    settings = get_settings()
    specs = [resolve_spec(settings, sequence, run, i)[0] for i in range(clips)]
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for spec in specs:
            save_job(tmp, prepare_clip(spec, frames=frames, settings=settings))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stdout.print(f"wrote {len(specs)} render jobs to {out}", highlight=False, soft_wrap=True)


@app.command("render")
def render(
    folder: Annotated[Path, typer.Argument(help="A folder written by `farm jobs prepare`.")],
    out: Annotated[Path, typer.Option(help="Output root; clips land in the SURREAL layout.")] = Path(
        "render-out"
    ),
    engine: Annotated[Engine | None, typer.Option(help="The render engine (default: FARM_ENGINE).")] = None,
    device: Annotated[Device | None, typer.Option(help="The render device (default: FARM_DEVICE).")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write per-clip timings here (JSON).")] = None,
) -> None:
    """Render prepared jobs with the files a worker writes (no body evaluation, no torch)."""
    from farm.cli.console import err
    from farm.cli.console import out as stdout
    from farm.core.settings import get_settings
    from farm.render.client import ParallelRenderer
    from farm.render.job import RenderError, RenderOptions, render_processes
    from worker.output import ClipWriter

    metas = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not metas:
        raise FarmError(f"{folder} holds no render jobs; write some with `farm jobs prepare`")
    if report is not None and not report.parent.is_dir():
        raise FarmError(f"{report.parent} is not a folder; create it first or name another --report")
    clips = [load_job(m) for m in metas]  # all refused before anything renders
    settings = get_settings()
    base = RenderOptions.from_settings(settings)
    chosen_device, chosen_engine = device or base.device, engine or base.engine
    options = RenderOptions(
        engine=chosen_engine,
        device=chosen_device,
        samples=base.samples,
        memory_limit_mb=base.memory_limit_mb,
        processes=render_processes(chosen_device, chosen_engine, settings.render_processes),
    )
    rows: list[dict[str, Any]] = []
    with ParallelRenderer(options) as renderer:
        t_start = time.perf_counter()
        renderer.start()
        rows.append({"start_s": time.perf_counter() - t_start})
        for clip in clips:
            name = clip.job.spec.name
            writer = ClipWriter(out, clip.job.spec)
            first: list[float] = []
            t0 = time.perf_counter()

            def seen(done: int, total: int, first: list[float] = first, t0: float = t0) -> None:
                if done and not first:
                    first.append(time.perf_counter() - t0)

            try:
                result = renderer.render(clip.job, seen, sink=writer.feed)
                t1 = time.perf_counter()
                writer.finish(result, clip.poses, clip.joints, clip.job.camera, result.software, clip.others)
            except RenderError as e:
                raise FarmError(f"Blender failed on {name}: {e}") from e
            finally:
                writer.abort()
            t2 = time.perf_counter()
            rows.append({
                "clip": name, "frames": clip.job.frame_count, "first_frame_s": first[0] if first else None,
                "render_s": t1 - t0, "end_to_end_s": t2 - t0, "blender": result.timings,
                "device": renderer.device,
            })  # fmt: skip
            err.print(f"{name}: {clip.job.frame_count} frames in {t2 - t0:.1f} s", highlight=False)
    if report is not None:
        tmp = report.with_name(f".{report.name}.partial")
        tmp.write_text(
            json.dumps({"engine": chosen_engine, "device": chosen_device, "clips": rows}, indent=1)
        )
        os.replace(tmp, report)
    stdout.print(f"rendered {len(clips)} clips to {out}", highlight=False, soft_wrap=True)
