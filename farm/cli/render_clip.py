"""`farm render-clip`: render one clip locally into a folder in the SURREAL format, for debugging and demos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from farm.cli.plan_options import (
    CameraMotionOption,
    CorrespondenceOption,
    PeopleOption,
    ShutterOption,
    parse_camera_motion,
    parse_people,
)
from farm.core.choices import Device, Engine
from farm.core.errors import BadUsage, FarmError
from farm.core.spec import ClipSpec, Convention, parse_spec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from farm.core.models import Sequence
    from farm.core.settings import Settings


def resolve_spec(
    settings: Settings,
    sequence: str,
    run: int,
    clip: int,
    *,
    people: tuple[int, int] | None = None,
    camera_motions: dict[str, float] | None = None,
    shutter: float | None = None,
    correspondence: bool | None = None,
) -> tuple[ClipSpec, str]:
    """The clip's spec from the database if it was planned, else planned now with the same seed rule.

    The plan options, None where not given, are what `farm enqueue` takes (`camera_motions` as
    sample_clip_spec takes it, {"static": 1} for a static camera): a clip planned now is planned with them, and
    they replace a stored spec's own, drawn from its stored seed as sample_clip_spec draws them.
    Returns (spec, "database" | "planned"); nothing is written to the database or enqueued.
    """
    from sqlalchemy import select

    from farm.core.db import session_scope
    from farm.core.models import Clip
    from scheduler.enqueue import Partners, load_pools, select_sequences, sequence_ref
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
            spec = parse_spec(row.spec)
            return _with_plan_options(
                session, catalog, seq, spec, people, camera_motions, shutter, correspondence
            ), "database"
        planned = [p for p in clips_in_run(seq.mocap_frames, seq.mocap_rate, run) if p.clip_index == clip]
        if not planned:
            count = len(clips_in_run(seq.mocap_frames, seq.mocap_rate, run))
            raise FarmError(f"{seq.name} has {count} clips in run {run}: choose --clip 0..{count - 1}")
        pools = load_pools(session, {seq.catalog_id})
        people = people or (1, 1)
        partners = (
            Partners(session).holding(seq.catalog_id, catalog, seq.split, planned[0].frame_count)
            if people != (1, 1)
            else None
        )
        spec = sample_clip_spec(
            sequence_ref(catalog, seq),
            planned[0],
            pools,
            settings.seed,
            settings.body_model,
            settings.convention,
            people,
            partners,
            camera_motions=camera_motions,
            shutter=shutter or 0.0,
            correspondence=bool(correspondence),
        )
        return spec, "planned"


def _with_plan_options(
    session: Session,
    catalog: str,
    seq: Sequence,
    spec: ClipSpec,
    people: tuple[int, int] | None,
    camera_motions: dict[str, float] | None,
    shutter: float | None,
    correspondence: bool | None,
) -> ClipSpec:
    """A stored spec with the plan options given (not None) in place of its own: the people and the camera
    motion drawn from the spec's seed, from the streams and with the functions sample_clip_spec uses, so a
    clip stored with the same options gets back what it holds."""
    from farm.core.seeding import child_stream
    from scheduler.enqueue import Partners, load_pools
    from scheduler.sampler import camera_motion_rand, choose_mode, people_rand, person_rand

    update: dict[str, object] = {}
    if people is not None:
        count = people_rand(child_stream(spec.seed, "people"), people) if people != (1, 1) else 1
        others = []
        if count > 1:
            pools = load_pools(session, {seq.catalog_id})
            partners = Partners(session).holding(seq.catalog_id, catalog, spec.split, spec.frame_count)
            taken = {(spec.sequence, spec.frame_start)}
            for k in range(1, count):
                stream = child_stream(spec.seed, f"person{k + 1}")
                others.append(person_rand(stream, partners, spec.frame_count, pools, spec.split, taken))
        update["others"] = tuple(others)
    if camera_motions is not None:
        update["camera_motion"] = None
        if set(camera_motions) != {"static"}:
            stream = child_stream(spec.seed, "camera_motion")
            update["camera_motion"] = camera_motion_rand(stream, choose_mode(stream, camera_motions))
    if shutter is not None:
        update["shutter"] = shutter
    if correspondence is not None:
        update["correspondence"] = correspondence
    return ClipSpec.model_validate({**spec.model_dump(), **update}) if update else spec


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
    people: PeopleOption = None,
    camera_motion: CameraMotionOption = None,
    shutter: ShutterOption = None,
    correspondence: CorrespondenceOption = None,
) -> None:
    """Render one clip (or its first N frames) to a local folder, with a progress bar.

    The plan options (--people, --camera-motion, --shutter, --correspondence) replace a stored spec's own.
    """
    from farm.cli.console import err, plural, progress_bar
    from farm.cli.console import out as stdout
    from farm.core.settings import get_settings, with_convention
    from farm.render.client import ParallelRenderer
    from farm.render.job import RenderError, RenderOptions, render_processes
    from worker.output import render_clip_files

    people_range = None if people is None else parse_people(people)
    camera_motions = None if camera_motion is None else parse_camera_motion(camera_motion) or {"static": 1.0}
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
    spec, source = resolve_spec(
        settings,
        sequence,
        run,
        clip,
        people=people_range,
        camera_motions=camera_motions,
        shutter=shutter,
        correspondence=correspondence,
    )
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
