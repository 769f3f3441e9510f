"""Storage commands for the `farm` CLI (mounted in farm/cli/main.py): `farm verify` and `farm qc`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from farm.cli.console import out, plural
from farm.core.errors import EXIT_CHECK_FAILED
from farm.core.settings import get_settings

NO_DONE_CLIPS = "the database {} has no done clips to check; render some first"


def verify(
    deep: Annotated[
        bool,
        typer.Option(
            "--deep/--quick", help="Re-hash every object (finds corruption), or compare stored metadata only."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every finished clip's files in storage; exit 1 if any is missing or corrupt."""
    from farm.cli.console import progress_bar
    from farm.core.db import session_scope
    from farm.core.storage import open_storage
    from worker.verify import verify_clips

    settings = get_settings()
    storage = open_storage(settings)
    storage.check()  # a wrong endpoint or bucket is one clear error, not every object "missing"
    with session_scope(settings.database_url) as session, progress_bar() as bar:
        task = bar.add_task("verifying clips" + (" (re-hashing)" if deep else ""), total=None)
        report = verify_clips(
            session, storage, deep, lambda done, total: bar.update(task, completed=done, total=total)
        )
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    elif not report.checked:  # nothing to check is no problem (exit 0), as for `farm qc`
        from farm.core.db import safe_url

        out.print(NO_DONE_CLIPS.format(safe_url(settings.database_url)), highlight=False, soft_wrap=True)
    else:
        _print_report(report, storage.uri("x")[:-1], deep)
    if not report.clean:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _print_report(report, root: str, deep: bool) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    how = "re-hashed" if deep else "compared by stored size and sha256"
    summary = f"{plural(report.checked, 'done clip')}, {plural(report.objects, 'object')} in {root} {how}"
    if report.clean:
        out.print(f"{summary}: all present and intact", highlight=False, soft_wrap=True)
        return
    table = Table(title="clips with missing or corrupt files")
    for column in ("clip", "object", "problem"):
        table.add_column(column, overflow="fold")  # whole keys, wrapped, even in a narrow log
    for clip, key in report.missing:
        table.add_row(clip, key, "[red]missing[/]")
    for clip, key, why in report.corrupt:
        table.add_row(clip, key, f"[red]corrupt[/]: {why}")
    out.print(table)
    out.print(
        f"{summary}: {len(report.missing):,} missing, {len(report.corrupt):,} corrupt; "
        "those clips must be rendered again",
        highlight=False,
        soft_wrap=True,
    )


def qc(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="A local folder of clips (render-clip's --out, the demo's folder). Default: the database's "
            "done clips, read from FARM_STORAGE_URL."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per clip.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="Clips checked at once.")] = 2,
) -> None:
    """Recompute the quality gate's checks and statistics of stored clips; exit 1 if any clip has a problem."""
    from farm.cli.console import progress_bar
    from worker.qc import qc_folder

    if folder is not None:
        with progress_bar() as bar:
            task = bar.add_task("checking clips", total=None)
            results = []
            for result in qc_folder(folder, threads):
                results.append(result)
                bar.update(task, completed=len(results))
        where = str(folder)
    else:
        results, where = _qc_done_clips(threads)
        if not results and not as_json:  # nothing to check is no problem (exit 0), as for `farm verify`
            from farm.core.db import safe_url

            text = NO_DONE_CLIPS.format(safe_url(get_settings().database_url))
            out.print(f"{text}, or pass a folder of clips: `farm qc FOLDER`", highlight=False, soft_wrap=True)
            return
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results]))
    else:
        _print_qc(results, where)
    if any(not r.quality.ok for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)


def _qc_done_clips(threads: int) -> tuple[list[Any], str]:
    """The done clips of FARM_DATABASE_URL (none if it has none), read back from FARM_STORAGE_URL."""
    from sqlalchemy import func, select

    from farm.cli.console import progress_bar
    from farm.core.db import session_scope
    from farm.core.models import Clip, ClipStatus
    from farm.core.storage import open_storage
    from worker.qc import qc_stored

    settings = get_settings()
    storage = open_storage(settings)
    storage.check()  # a wrong endpoint or bucket is one clear error, not every file "missing"
    done = Clip.status == ClipStatus.DONE
    with session_scope(settings.database_url) as session, progress_bar() as bar:
        total = session.scalar(select(func.count()).select_from(Clip).where(done)) or 0
        task = bar.add_task("checking clips", total=total)
        specs = session.scalars(
            select(Clip.spec).where(done).order_by(Clip.id).execution_options(yield_per=200)
        )
        results = []
        for result in qc_stored(specs, storage, threads):
            results.append(result)
            bar.update(task, completed=len(results))
    return results, storage.uri("x")[:-1]


def _print_qc(results: list[Any], where: str) -> None:
    from rich.table import Table

    def num(value: Any, fmt: str) -> str:
        return "?" if value is None else format(value, fmt)

    table = Table()
    table.add_column("clip", no_wrap=True, min_width=max(len(r.clip) for r in results))  # names stay whole
    for column in ("frames", "with body", "body px/frame", "joints in image", "flow px"):
        table.add_column(column, justify="right")
    table.add_column("problems", overflow="fold")
    for r in results:
        s = r.quality.stats
        table.add_row(
            r.clip,
            num(s["frames"], "d"),
            num(s["frames_with_body"], "d"),
            num(s["body_pixels_mean"], ",.0f"),
            num(s["joints_in_image"], ".0%"),
            num(s["flow_mean"], ".2f"),
            "[green]ok[/]" if r.quality.ok else "[red]" + " ".join(r.quality.problems) + "[/]",
            style=None if r.quality.ok else "red",
        )
    out.print(table)
    bad = sum(not r.quality.ok for r in results)
    half = sum(
        1
        for r in results
        if r.quality.stats["frames"]
        and 2 * (r.quality.stats["frames_with_body"] or 0) < r.quality.stats["frames"]
    )
    good = len(results) - bad
    out.print(
        f"{plural(len(results), 'clip')} in {where}: {good:,} {'passes' if good == 1 else 'pass'} the quality "
        f"gate, {bad:,} {'has' if bad == 1 else 'have'} problems; {half:,} "
        f"{'shows the body in fewer than half its' if half == 1 else 'show the body in fewer than half their'} "
        "frames",
        highlight=False,
        soft_wrap=True,
    )
