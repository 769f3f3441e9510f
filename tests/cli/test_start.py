"""`farm --help` and `farm status` start at once: a new process imports only what the command uses (the
timings are benchmarks/cli_start.py's; a test never asserts one), and the help lines of the commands that
`farm` imports only when they run (farm.cli.main's LAZY) are their own."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
import typer.main

from farm.cli.main import LAZY, app

# Run `farm ARGS` as its entry point does, then write the names of every module the process imported.
PROBE = """
import json, os, sys
from farm.cli.main import main
try:
    main(sys.argv[1:])
finally:
    with open(os.environ["MODULES_OUT"], "w") as f:
        json.dump(sorted(sys.modules), f)
"""
# What neither command needs: the worker's, renderer's, storage's and training's heavy packages.
HEAVY = {"celery", "kombu", "numpy", "scipy", "torch", "bpy", "boto3", "botocore", "alembic", "PIL"}


def imported(tmp_path: Path, *args: str, database: Path) -> set[str]:
    """The top-level packages a new `farm ARGS` process imports, on the SQLite database `database`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_") and k != "PYTHONPATH"}
    env |= {"FARM_DATABASE_URL": f"sqlite:///{database}", "MODULES_OUT": str(tmp_path / "modules.json")}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return {name.split(".")[0] for name in json.loads((tmp_path / "modules.json").read_text())}


def test_the_help_imports_neither_the_database_nor_pydantic(tmp_path: Path) -> None:
    modules = imported(tmp_path, "--help", database=tmp_path / "farm.db")
    assert modules & (HEAVY | {"sqlalchemy", "pydantic", "pydantic_settings"}) == set()
    assert not (tmp_path / "farm.db").exists()


def test_status_imports_nothing_heavy(tmp_path: Path) -> None:
    database = tmp_path / "farm.db"
    imported(tmp_path, "db", "upgrade", database=database)  # the schema in place, as `farm status` meets it
    modules = imported(tmp_path, "status", "--json", database=database)
    assert "sqlalchemy" in modules  # it did query
    assert modules & HEAVY == set()


def test_the_lazy_commands_help_lines_are_their_own() -> None:
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    for name, (panel, _, line) in LAZY.items():
        command = group.get_command(ctx, name)  # imports it
        own = inspect.cleandoc(command.short_help or command.help or "").split("\n\n")[0]
        assert (line, panel) == (" ".join(own.split()), command.rich_help_panel), name
