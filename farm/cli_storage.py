"""Storage commands for the `farm` CLI (mounted in farm/cli.py): `farm verify`."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from farm.settings import get_settings


def verify(
    deep: bool = typer.Option(
        True,
        "--deep/--quick",
        help="Re-hash every object (finds corruption), or compare stored metadata only.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check every finished clip's files in storage; exit 1 if any is missing or corrupt."""
    from farm.cli import progress_bar
    from farm.db import session_scope
    from farm.storage import open_storage
    from farm.verify import verify_clips

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
    else:
        _print_report(report, storage.uri("x")[:-1], deep)
    if not report.clean:
        raise typer.Exit(1)


def _print_report(report, root: str, deep: bool) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    err = Console(stderr=True)
    how = "re-hashed" if deep else "compared by stored size and sha256"
    summary = f"{report.checked:,} done clips, {report.objects:,} objects in {root} {how}"
    if report.clean:
        err.print(f"{summary}: all present and intact", highlight=False, soft_wrap=True)
        return
    table = Table(title="clips with missing or corrupt files")
    for column in ("clip", "object", "problem"):
        table.add_column(column, overflow="fold")  # whole keys, wrapped, even in a narrow log
    for clip, key in report.missing:
        table.add_row(clip, key, "[red]missing[/]")
    for clip, key, why in report.corrupt:
        table.add_row(clip, key, f"[red]corrupt[/]: {why}")
    Console().print(table)
    err.print(
        f"{summary}: {len(report.missing):,} missing, {len(report.corrupt):,} corrupt; "
        "those clips must be rendered again",
        highlight=False,
        soft_wrap=True,
    )
