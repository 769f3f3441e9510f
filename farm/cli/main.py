"""The `farm` command line. Heavy imports live inside the commands, and the commands of the other farm/cli
modules are imported only when they run, so that `farm --help` and `farm status` start at once
(benchmarks/cli_start.py; tests/cli/test_start.py keeps celery, numpy, ... out of them)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import typer.core
import typer.main

from farm import __version__
from farm.cli.console import err, out, plural, progress_bar
from farm.cli.plan_options import (
    CameraMotionOption,
    CorrespondenceOption,
    ShutterOption,
    parse_camera_motion,
    parse_people,
)
from farm.core.choices import Convention, Device, Split
from farm.core.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, FarmError

if TYPE_CHECKING:
    from farm.core.settings import Settings

# The help's groups, in the order an operator meets them.
PANELS = SETUP, PLAN, RUN, CLIPS = "Set up", "Plan and track", "Run the farm", "Clips and files"
EXIT_CODES = (
    f"Exit codes: 0 success; {EXIT_CHECK_FAILED} a check found problems (verify, qc, demo); "
    f"{EXIT_USAGE} bad usage (an unknown option, a value its option does not allow); {EXIT_BAD_INPUT} bad input "
    f"(a setting, file, name or value the farm refused); {EXIT_UNAVAILABLE} a service is unreachable "
    "(the database, broker or storage)."
)

# typer's help shows a flag's type (`--dry-run <bool>`) as if the flag took a value: a flag shows none.
_option_type = typer.core.TyperOption.display_type_rich


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _option_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


# The commands of the other farm/cli modules, imported only when one runs (or shows its own help): their imports
# (numpy, pydantic, ...) would slow every command. Each is name: (panel, "module:function" or "module:app" for
# a group, the line `farm --help` shows for it, which tests/cli/test_start.py checks against its own help).
LAZY_COMMANDS = {
    "bundle": (RUN, "farm.cli.bundle:bundle", "Write a relocatable, network-free worker: Python 3.11, bpy, the farm and its locked dependencies."),
    "render-clip": (CLIPS, "farm.cli.render_clip:render_clip", "Render one clip (or its first N frames) to a local folder, with a progress bar."),
    "verify": (CLIPS, "farm.cli.outputs:verify", "Check every finished clip's files in storage; exit 1 if any is missing or corrupt."),
    "qc": (CLIPS, "farm.cli.outputs:qc", "Recompute the quality gate's checks and statistics of stored clips; exit 1 if any clip has a problem."),
    "bookkeeper": (RUN, "farm.cli.dashboard:bookkeeper", "Serve the dashboard (/), the JSON API (/api/...), /metrics and clip thumbnails from the database."),
}  # fmt: skip
LAZY_GROUPS = {
    "assets": (SETUP, "farm.cli.assets:app", "Bodies and appearance assets."),
    "slurm": (RUN, "farm.cli.slurm:app", "Run workers on a Slurm cluster."),
    "jobs": (RUN, "farm.cli.jobs:app", "Render jobs prepared here and rendered elsewhere (a bundle, a GPU machine)."),
    "export": (CLIPS, "farm.cli.export:app", "Export rendered clips for training: an index table and WebDataset shards."),
}  # fmt: skip
LAZY = LAZY_COMMANDS | LAZY_GROUPS


def load_command(name: str) -> Any:
    """The click command of a LAZY row, built as `app.command(...)` or `app.add_typer(...)` would build it."""
    panel, target, _ = LAZY[name]
    module, attribute = target.split(":")
    found = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer()
    if isinstance(found, typer.Typer):
        holder.add_typer(found, name=name, rich_help_panel=panel)
    else:
        holder.command(name, rich_help_panel=panel)(found)
    return typer.main.get_group(holder).commands[name]


class StandIn(typer.core.TyperCommand):
    """A LAZY command before its import: its name, panel and help line, for the help's listing."""


class GroupedCommands(typer.core.TyperGroup):
    """Lists the commands panel by panel in PANELS' order (each panel in registration order), so that the
    help shows the groups in the order an operator meets them; imports a LAZY command when it is used."""

    listing = False  # while the help lists the commands (a StandIn shows its line without an import)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

        def stand_ins(rows: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
            return {
                name: StandIn(name=name, help=line, rich_help_panel=panel)
                for name, (panel, _, line) in rows.items()
            }

        # typer lists commands, then groups: the LAZY commands first, the LAZY groups last, as registered
        self.commands = {**stand_ins(LAZY_COMMANDS), **self.commands, **stand_ins(LAZY_GROUPS)}

    def list_commands(self, ctx: Any) -> list[str]:
        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else -1

        return sorted(super().list_commands(ctx), key=rank)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, StandIn) and not self.listing:
            command = self.commands[cmd_name] = load_command(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    cls=GroupedCommands,
    help="surreal-farm: SURREAL-style synthetic humans, rendered at scale.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="MoCap catalogs.", no_args_is_help=True)
catalog_import_app = typer.Typer(help="Register MoCap sequences.", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel=SETUP)
app.add_typer(catalog_app, name="catalog", rich_help_panel=PLAN)
catalog_app.add_typer(catalog_import_app, name="import")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"farm (surreal-farm) {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """surreal-farm: SURREAL-style synthetic humans, rendered at scale."""


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to FARM_DATABASE_URL."""
    from farm.core.db import SCHEMA_REVISION, check_reachable, current_revision, get_engine, safe_url, upgrade
    from farm.core.settings import get_settings

    url = get_settings().database_url
    engine = get_engine(url)
    check_reachable(engine)
    before = current_revision(engine)
    upgrade(url)
    if before == SCHEMA_REVISION:
        done = f"already up to date at revision {SCHEMA_REVISION}"
    elif before is None:
        done = f"created the schema at revision {SCHEMA_REVISION}"
    else:
        done = f"upgraded from revision {before} to {SCHEMA_REVISION}"
    out.print(f"database {safe_url(url)}: {done}", highlight=False, soft_wrap=True)


def _report_import(result: Any) -> None:
    if result.created:
        out.print(
            f"catalog {result.catalog!r}: {plural(result.sequences, 'sequence')}, "
            f"{plural(result.shape_banks, 'shape bank')}"
        )
    else:
        out.print(
            f"catalog {result.catalog!r} is already imported ({plural(result.sequences, 'sequence')}); "
            "nothing to do"
        )


@catalog_import_app.command("surreal")
def import_surreal(
    path: Annotated[Path, typer.Argument(help="SURREAL's smpl_data.npz.")],
    name: Annotated[
        str, typer.Option(help="Catalog name; `<name>_all` then selects all its sequences.")
    ] = "cmu",
) -> None:
    """Register every sequence of a SURREAL smpl_data.npz, with its subject, split and shape banks."""
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from scheduler.catalogs import read_surreal_npz, register_catalog

    with err.status(f"reading {path}"):
        sequences, banks = read_surreal_npz(path)
    with session_scope(get_settings().database_url) as session:
        _report_import(register_catalog(session, name, "surreal", str(path.resolve()), sequences, banks))


@catalog_import_app.command("amass")
def import_amass(
    folder: Annotated[
        Path, typer.Argument(help="A folder of AMASS .npz motion files (searched recursively).")
    ],
    name: Annotated[str, typer.Option(help="Catalog name.")] = "amass",
) -> None:
    """Register AMASS motion files (any frame rate; clips are cut at 30 fps)."""
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from scheduler.catalogs import read_amass_dir, register_catalog

    with err.status(f"reading {folder}"):
        sequences = read_amass_dir(folder)
    with session_scope(get_settings().database_url) as session:
        _report_import(register_catalog(session, name, "amass", str(folder.resolve()), sequences))


@catalog_import_app.command("builtin")
def import_builtin() -> None:
    """Register the built-in, licence-free motion library as the catalog `builtin`."""
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from scheduler.catalogs import builtin_sequences, register_catalog

    with session_scope(get_settings().database_url) as session:
        _report_import(register_catalog(session, "builtin", "builtin", "builtin:", builtin_sequences()))


@catalog_app.command("list")
def catalog_list(
    catalog: Annotated[str | None, typer.Option(help="Only this catalog.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List the registered sequences."""
    from rich.table import Table

    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from scheduler.catalogs import list_sequences

    with session_scope(get_settings().database_url) as session:
        rows = list_sequences(session, catalog)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("catalog", "sequence", "subject", "split", "frames (30 fps)")
    for row in rows:
        table.add_row(row["catalog"], row["name"], row["subject"], row["split"], str(row["frames"]))
    out.print(table)


def _parse_runs(runs: str) -> tuple[int, ...]:
    try:
        parsed = tuple(sorted({int(r) for r in runs.split(",") if r.strip()}))
    except ValueError:
        parsed = ()
    if not parsed or any(r not in (0, 1, 2) for r in parsed):
        raise typer.BadParameter(
            f"{runs!r} is not a comma-separated list of 0, 1 and 2", param_hint="'--runs'"
        )
    return parsed


ConventionOption = Annotated[
    Convention | None,
    typer.Option(help="What the files mean: surreal (the original's, default) or clean (FARM_CONVENTION)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command(rich_help_panel=PLAN)
def enqueue(
    sequences: Annotated[
        str, typer.Option(help="`<catalog>_all` or NAME[,NAME...] (NAME may be catalog/sequence).")
    ],
    runs: Annotated[str, typer.Option(help="Which runs (clip steps 50, 30, 70).")] = "0,1,2",
    split: Annotated[Split | None, typer.Option(help="Only train or test sequences.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many clips of the plan.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and count; write and send nothing.")
    ] = False,
    as_json: JsonOption = False,
    convention: ConventionOption = None,
    people: Annotated[
        str, typer.Option(help="People per clip: N, or A-B drawn per clip (1..4; SURREAL's plan is 1).")
    ] = "1",
    camera_motion: CameraMotionOption = None,
    shutter: ShutterOption = None,
    correspondence: CorrespondenceOption = None,
) -> None:
    """Plan clips with SURREAL's rule, store them, and queue one render task per new clip."""
    from farm.core.settings import get_settings, with_convention
    from scheduler.enqueue import Selection
    from scheduler.enqueue import enqueue as run_enqueue

    selection = Selection(
        sequences,
        _parse_runs(runs),
        split,
        limit,
        parse_people(people),
        camera_motions=parse_camera_motion(camera_motion),
        shutter=shutter or 0.0,
        correspondence=bool(correspondence),
    )
    settings = with_convention(get_settings(), convention)
    with progress_bar() as bar:
        tasks: dict[str, Any] = {}

        def show(stage: str, done: int, total: int) -> None:
            label = {"plan": "planning and storing clips", "queue": "queueing render tasks"}[stage]
            if stage not in tasks:
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = run_enqueue(settings, selection, dry_run, show)
    if as_json:
        typer.echo(json.dumps(result))
        return
    c, f, new = result["clips"], result["frames"], plural(result["new_clips"], "new clip")
    plan = (
        f"{plural(c['total'], 'clip')} ({c['train']:,} train, {c['test']:,} test), "
        f"{plural(f['total'], 'frame')} ({f['train']:,} train, {f['test']:,} test)"
    )
    if dry_run:
        out.print(f"would plan {plan}; {new} would be stored and queued (a dry run: nothing written)")
    else:
        out.print(f"planned {plan}; {new} queued")


@app.command(rich_help_panel=PLAN)
def status(as_json: JsonOption = False) -> None:
    """Progress toward the target frames: per split and run, clips per state, failures, throughput, ETA."""
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from farm.dashboard.progress import farm_status

    settings = get_settings()
    with session_scope(settings.database_url) as session:
        report = farm_status(session, settings.target_frames)
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_status(report)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def shown(text: object, lines: bool = False) -> str:
    """Text from the database or an exception, safe to print with rich: control characters (an ESC sequence
    would drive the terminal; newlines too unless `lines`) become U+FFFD, and markup-like brackets
    ("[/data/bg.jpg]") are escaped."""
    from rich.markup import escape

    return escape((_CONTROL_BUT_LINES if lines else _CONTROL).sub("\ufffd", str(text)))


def _print_status(report: dict[str, Any]) -> None:
    from rich.table import Table

    pct = 100 * report["progress"]
    out.print(f"[bold]{report['frames_done']:,}[/] of {report['target_frames']:,} frames done ({pct:.2f}%)")
    table = Table("split / run", "clips done", "clips planned", "frames done", "frames planned")
    for split, part in report["splits"].items():
        table.add_row(
            shown(split),
            *(f"{part[k]:,}" for k in ("clips_done", "clips_planned", "frames_done", "frames_planned")),
        )
        for run, rp in sorted(part["runs"].items()):
            table.add_row(
                f"  {shown(run)}",
                *(f"{rp[k]:,}" for k in ("clips_done", "clips_planned", "frames_done", "frames_planned")),
            )
    out.print(table)
    out.print("clips: " + ", ".join(f"{shown(state)} {n:,}" for state, n in report["clips"].items()))
    out.print(
        f"done clips with the body out of frame in more than half their frames: {report['body_out_of_frame']:,}"
    )
    tp = report["throughput"]
    eta = report["eta_seconds"]
    eta_text = "unknown (nothing finished in the last hour)" if eta is None else f"{eta / 3600:.1f} h"
    out.print(
        f"last hour: {plural(tp['clips'], 'clip')}, {plural(tp['frames'], 'frame')} in "
        f"{tp['rendering_seconds'] / 60:.1f} min of rendering ({tp['frames_per_second']:.2f} frames/s); ETA {eta_text}"
    )
    for failure in report["failures"]:
        out.print(f"[red]failed[/] {plural(failure['clips'], 'clip')}: {shown(failure['reason'])}")
    for paused in report["paused_workers"]:
        out.print(
            f"[yellow]paused[/] worker {shown(paused['name'])} until {shown(paused['until'])}: "
            f"it {shown(paused['reason'])}"
        )


# Celery's own options go after `--`; an unknown option before it is a mistake (exit 2), not Celery's.
@app.command(rich_help_panel=RUN, context_settings={"allow_extra_args": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues (default: FARM_RENDER_QUEUE).")
    ] = None,
    device: Annotated[Device | None, typer.Option(help="The render device (default: FARM_DEVICE).")] = None,
    gpu: Annotated[
        int | None,
        typer.Option(min=0, help="Use only this GPU (sets CUDA_VISIBLE_DEVICES for the worker)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Worker processes, each with its own warm Blender.")
    ] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Start a Celery worker that renders clips (task events on, for Flower).

    Anything after `--` goes to Celery's worker as it is: `farm worker -- --max-tasks-per-child 50`.
    """
    import os

    from farm.core.db import ready_engine
    from farm.core.settings import get_settings

    if device is not None:
        os.environ["FARM_DEVICE"] = device
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if concurrency > 1:  # clips in parallel already: one Blender process per clip, unpinned (unless set)
        os.environ.setdefault("FARM_RENDER_PROCESSES", "1")
    get_settings.cache_clear()
    settings = get_settings()
    import worker.tasks  # noqa: F401  (registers render_clip with the app)
    from farm.core.celery_app import celery_for, check_broker
    from farm.core.storage import open_storage

    celery_app = celery_for(settings)
    check_broker(celery_app)
    ready_engine(settings.database_url)
    open_storage(settings, settings.upload_retry_s).check()
    err.print(f"farm worker: {_render_device(settings)}", highlight=False, soft_wrap=True)
    celery_app.worker_main(
        [
            "worker",
            "--queues", queues or settings.render_queue,
            "--concurrency", str(concurrency),
            "--pool", "prefork",
            "--task-events",
            "--loglevel", loglevel,
            "--hostname", f"farm-{settings.device}{'' if gpu is None else gpu}-{os.getpid()}@%h",  # unique per worker
            *ctx.args,  # Celery's own options, after ours so that they win
        ]
    )  # fmt: skip


def _render_device(settings: Settings) -> str:
    """Start Blender once as the worker's processes will, and say which device it renders on: a device it
    cannot use (--device cuda on a machine without a GPU) stops the worker before it takes a clip."""
    from farm.render.client import ParallelRenderer
    from farm.render.job import RenderError, RenderOptions

    try:
        with ParallelRenderer(RenderOptions.from_settings(settings)) as blender:
            blender.start()
            return blender.device or f"{settings.engine} on {settings.device}"
    except RenderError as exc:
        reason = str(exc).removeprefix("RenderError: ").splitlines()[0]
        raise FarmError(f"the worker cannot start: {reason}") from None


@app.command(rich_help_panel=RUN)
def reconcile(
    every: Annotated[
        float | None, typer.Option(min=1, help="Run forever, once every this many seconds.")
    ] = None,
) -> None:
    """Re-queue clips whose worker died and re-send messages the broker lost."""
    import time

    from farm.core.settings import get_settings
    from scheduler.reconcile import reconcile as run_reconcile

    while True:
        report = run_reconcile(get_settings())
        out.print(
            f"reconcile: {plural(report['taken_back'], 'clip')} taken back from dead workers, "
            f"{plural(report['resent'], 'message')} sent, {plural(report['queued'], 'clip')} queued"
            + (" (farm paused: nothing sent)" if report["paused"] else "")
        )
        if every is None:
            return
        time.sleep(every)


def _set_paused(paused: bool) -> None:
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from worker.claims import set_paused

    with session_scope(get_settings().database_url) as session:
        set_paused(session, paused)


@app.command(rich_help_panel=RUN)
def pause() -> None:
    """Stop handing out work: workers finish their current clip and take no new one."""
    _set_paused(True)
    out.print("farm paused: workers take no new clips until `farm resume`")


@app.command(rich_help_panel=RUN)
def resume() -> None:
    """Hand out work again (and re-send the messages dropped while paused)."""
    from farm.core.settings import get_settings
    from scheduler.reconcile import reconcile as run_reconcile

    _set_paused(False)
    report = run_reconcile(get_settings())
    out.print(
        f"farm resumed: {plural(report['resent'], 'message')} sent, {plural(report['queued'], 'clip')} queued"
    )


@app.command(rich_help_panel=RUN)
def retry(
    failed: Annotated[
        bool, typer.Option("--failed", help="Put every failed clip back in the queue.")
    ] = False,
) -> None:
    """Put failed clips back in the queue with a fresh attempt count."""
    from farm.core.celery_app import celery_for, check_broker, send_render_tasks
    from farm.core.db import session_scope
    from farm.core.settings import get_settings
    from worker.claims import retry_failed

    if not failed:
        raise typer.BadParameter("say what to retry: `farm retry --failed`", param_hint="'--failed'")
    app_ = celery_for(get_settings())
    check_broker(app_)
    with session_scope(get_settings().database_url) as session:
        ids = retry_failed(session)
    send_render_tasks(app_, ids)
    out.print(f"{plural(len(ids), 'failed clip')} queued again")


@app.command(rich_help_panel=SETUP)
def demo(
    folder: Annotated[Path, typer.Option(help="Where the demo keeps its database, queue and output.")] = Path(
        "farm-demo"
    ),
) -> None:
    """Render a handful of clips end to end on this machine, with no servers, and show where they are."""
    import time

    from farm.cli.demo import run_demo

    started = time.monotonic()
    with progress_bar() as bar:
        report = run_demo(folder, bar)
    for clip in report["clips"]:
        line = f"  {clip['name']}: {clip['status']}" + (
            f", {clip['frames']} frames" if clip["frames"] else ""
        )
        err.print(shown(line + (f" ({clip['error']})" if clip["error"] else "")), highlight=False)
    err.print(f"output: {report['output']}", highlight=False, soft_wrap=True)
    if report["contact_sheet"]:
        err.print(f"contact sheet: {report['contact_sheet']}", highlight=False, soft_wrap=True)
    err.print(f"done in {time.monotonic() - started:.0f} s; the bookkeeping:", highlight=False)
    command = f"FARM_DATABASE_URL={shlex.quote(report['database'])} {shlex.quote(farm_command())} status"
    err.print(command, highlight=False, soft_wrap=True, markup=False)
    if any(clip["status"] != "done" for clip in report["clips"]):
        raise typer.Exit(EXIT_CHECK_FAILED)


def farm_command() -> str:
    """How the user can run this same `farm` again: `farm` when their PATH finds this one (an activated venv),
    else its full path (`make demo` runs .venv/bin/farm, which a shell without the venv does not find)."""
    import shutil

    this = Path(sys.argv[0]).resolve()
    found = shutil.which("farm")
    return "farm" if found and Path(found).resolve() == this else str(this)


def _allowed(option: typer.core.TyperOption) -> str | None:
    """What an option with a fixed set of values allows, in words ("one of train, test", "a whole number
    from 0 to 2"); None for an option of another kind."""
    kind = option.type_descriptor
    if kind.choices:
        return "one of " + ", ".join(map(str, kind.choices))
    if kind.annotation not in (int, float):
        return None
    number = "a whole number" if kind.annotation is int else "a number"
    low, high = option.min, option.max
    if low is not None and high is not None:
        return f"{number} from {low} to {high}"
    if low is not None:
        return f"{number} of at least {low}"
    return number if high is None else f"{number} of at most {high}"


def _usage_sentence(exc: typer.TyperException) -> str:
    """The command line's complaint in one sentence. typer checks option values with pydantic, whose wording
    ("Value error, ...", "Input should be ...") is replaced here by the value given and what is allowed."""
    from pydantic import ValidationError

    message = exc.format_message()
    option, ctx = getattr(exc, "param", None), getattr(exc, "ctx", None)
    if isinstance(option, typer.core.TyperOption) and isinstance(exc.__cause__, ValidationError):
        allowed = _allowed(option)
        if allowed is not None:
            given = exc.__cause__.errors()[0]["input"]
            message = f"Invalid value for '{option.opts[0]}': {given!r} is not {allowed}"
    return message.rstrip(".") + (f"; see `{ctx.command_path} --help`" if ctx is not None else "")


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[red]error:[/] {shown(message, lines=True)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad usage (exit 2) and a FarmError (3 bad input, 4 a service unreachable) end in one
    sentence on stderr, never a traceback or a usage panel."""
    try:
        code = app(args=argv, prog_name="farm", standalone_mode=False)
    except typer.TyperException as exc:  # typer's click: an unknown option, a missing argument, a bad value
        if type(exc).__name__ == "NoArgsIsHelpError":  # `farm db`: the help is printed already
            sys.exit(exc.exit_code)
        _fail(_usage_sentence(exc), exc.exit_code)
    except FarmError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    if isinstance(code, int) and code:  # a typer.Exit's code: 1 when a check found problems
        sys.exit(code)


if __name__ == "__main__":
    main()
