"""`farm render-clip`: render one clip locally into a folder in the SURREAL format, for debugging and demos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from farm.core.errors import BadUsage, FarmError
from farm.core.settings import Device, Engine
from farm.core.spec import ClipSpec, Convention, parse_spec

if TYPE_CHECKING:
    from farm.core.settings import Settings


def resolve_spec(settings: Settings, sequence: str, run: int, clip: int) -> tuple[ClipSpec, str]:
    """The clip's spec from the database if it was planned, else planned now with the same seed rule.

    Returns (spec, "database" | "planned"); nothing is written to the database or enqueued.
    """
    from sqlalchemy import select

    from farm.core.db import session_scope
    from farm.core.models import Clip
    from scheduler.enqueue import load_pools, select_sequences, sequence_ref
    from scheduler.plan import clips_in_run
    from scheduler.sampler import sample_clip_spec

    if run not in (0, 1, 2):
        raise BadUsage(f"--run {run} must be 0, 1 or 2")
    with session_scope(settings.database_url) as session:
        pairs = select_sequences(session, sequence, None)
        if len(pairs) != 1:
            raise FarmError(f"{sequence!r} names {len(pairs)} sequences; name exactly one (catalog/sequence)")
        catalog, seq = pairs[0]
        row = session.scalars(
            select(Clip).where(Clip.sequence_id == seq.id, Clip.run == run, Clip.clip_index == clip)
        ).first()
        if row is not None:
            return parse_spec(row.spec), "database"
        planned = [p for p in clips_in_run(seq.mocap_frames, seq.mocap_rate, run) if p.clip_index == clip]
        if not planned:
            count = len(clips_in_run(seq.mocap_frames, seq.mocap_rate, run))
            raise FarmError(f"{seq.name} has {count} clips in run {run}: choose --clip 0..{count - 1}")
        pools = load_pools(session, {seq.catalog_id})
        spec = sample_clip_spec(
            sequence_ref(catalog, seq),
            planned[0],
            pools,
            settings.seed,
            settings.body_model,
            settings.convention,
        )
        return spec, "planned"


def render_clip(
    sequence: Annotated[str, typer.Option(help="Sequence name (or catalog/sequence).")],
    run: Annotated[int, typer.Option(min=0, max=2, help="Run 0, 1 or 2.")] = 0,
    clip: Annotated[int, typer.Option(min=0, help="Clip index (0-based).")] = 0,
    frames: Annotated[int | None, typer.Option(min=1, help="Render only the clip's first N frames.")] = None,
    out: Annotated[Path, typer.Option(help="Output root; the clip lands in the SURREAL layout.")] = Path(
        "render-out"
    ),
    contact_sheet: Annotated[Path | None, typer.Option(help="Also write a contact sheet PNG here.")] = None,
    engine: Annotated[Engine | None, typer.Option(help="The render engine (default: FARM_ENGINE).")] = None,
    device: Annotated[Device | None, typer.Option(help="The render device (default: FARM_DEVICE).")] = None,
    convention: Annotated[
        Convention | None,
        typer.Option(
            help="What the files mean: surreal (the original's, default) or clean (FARM_CONVENTION)."
        ),
    ] = None,
) -> None:
    """Render one clip (or its first N frames) to a local folder, with a progress bar."""
    from farm.cli.console import err, plural, progress_bar
    from farm.cli.console import out as stdout
    from farm.core.settings import get_settings, with_convention
    from farm.render.client import ParallelRenderer
    from farm.render.job import RenderError, RenderOptions, render_processes
    from worker.output import render_clip_files

    settings = with_convention(get_settings(), convention)
    options = RenderOptions.from_settings(settings)
    chosen_device, chosen_engine = device or options.device, engine or options.engine
    options = RenderOptions(
        engine=chosen_engine,
        device=chosen_device,
        samples=options.samples,
        memory_limit_mb=options.memory_limit_mb,
        processes=render_processes(chosen_device, chosen_engine, settings.render_processes),
    )
    spec, source = resolve_spec(settings, sequence, run, clip)
    if convention is not None:  # also over a stored spec: the option says how to write this copy
        spec = spec.model_copy(update={"convention": convention})
    err.print(f"{spec.name}: spec {'from the database' if source == 'database' else 'planned now'}")
    with progress_bar() as bar, ParallelRenderer(options) as renderer:
        task = bar.add_task("body and assets", total=None)

        def show(done: int, total: int) -> None:
            stage = "rendering" if done < total else "writing files"
            bar.update(task, description=stage, total=total, completed=done)

        try:
            files = render_clip_files(spec, renderer, out, frames=frames, progress=show, settings=settings)
        except RenderError as e:
            raise FarmError(f"Blender failed on {spec.name}: {e}") from e
    stdout.print(f"wrote {plural(files.frames, 'frame')} to {files.directory}", highlight=False)
    if files.qc:  # the writer's quality gate passed; what it measured
        qc = files.qc
        stdout.print(
            f"quality gate passed: body in {qc['frames_with_body']} of {qc['frames']} frames, "
            f"{qc['joints_in_image']:.0%} of joints in the image",
            highlight=False,
        )
    if contact_sheet is not None:
        from worker.contact_sheet import contact_sheet_for_clip

        contact_sheet_for_clip(files.directory, spec.name, contact_sheet)
        stdout.print(f"contact sheet: {contact_sheet}", highlight=False)
