"""What a new user meets at the command line: the README's exit codes, one-sentence usage errors, help without
value placeholders on flags, results on stdout, whole lines in a pipe, counts in words, and honest dry runs.

Every command runs through `farm`'s entry point (the `farm` fixture, tests/conftest.py) on the embedded SQLite
default, or as the installed `farm` in a subprocess where a real pipe matters."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
from rich.table import Table

from farm.cli.console import FarmConsole
from farm.cli.main import app
from farm.core.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
FARM = Path(sys.executable).parent / "farm"


def exit_code_table() -> dict[int, str]:
    """The rows `| code | meaning |` of the table in README.md's "## Using it" section."""
    section = (ROOT / "README.md").read_text().split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M)}


TABLE = exit_code_table()


def code_for(meaning: str) -> int:
    """The code of the README's one row whose meaning starts so."""
    (code,) = [code for code, text in TABLE.items() if text.startswith(meaning)]
    return code


OK, CHECK_FAILED, USAGE = (
    code_for("success"),
    code_for("a check ran and found problems"),
    code_for("bad usage"),
)


def test_the_readme_states_the_codes_the_farm_exits_with():
    assert sorted(TABLE) == [0, 1, 2, 3, 4]
    assert (OK, CHECK_FAILED, USAGE) == (EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE)
    assert "an unknown option" in TABLE[USAGE] and "value outside what it allows" in TABLE[USAGE]
    assert "`farm verify`" in TABLE[CHECK_FAILED] and "`farm qc`" in TABLE[CHECK_FAILED]


# --- every command: an unknown option, and each option with a fixed set of values given one outside it -----


def commands(command: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path, click command) for `farm` and every group and command under it (the ones `farm` imports only
    when used, farm.cli.main's LAZY, included)."""
    command = command or typer.main.get_command(app)
    found = [(path, command)]
    if isinstance(command, typer.core.TyperGroup):
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            found += commands(command.get_command(ctx, name), (*path, name))
    return found


COMMANDS = commands()
NAMES = [" ".join(("farm", *path)) for path, _ in COMMANDS]

# Options whose allowed values the farm checks itself (a list, a form, a bound set by another option), each
# with a value outside them; choices and number ranges are found in the command tree.
CHECKED = {
    ("enqueue", "--runs"): "5",
    ("enqueue", "--people"): "7",
    ("enqueue", "--camera-motion"): "zoom+follow",
    ("render-clip", "--people"): "7",
    ("render-clip", "--camera-motion"): "follow=-1",
    ("export", "index", "--where"): "bodies>3",
    ("export", "shards", "--where"): "frames_with_body>>0.9",
    ("slurm", "script", "--time"): "5h",
    ("slurm", "script", "--stop-before"): "86400",  # not a minute shorter than the default 24:00:00
    ("slurm", "script", "--sbatch"): "mem=32G",
    ("bundle", "--split"): "60Q",
}
# Options that take any value (names, selectors, free text); every other option must be in CHECKED or have
# choices or a range, so that a new option with a fixed set of values is not left out of the test below.
FREE = {"--sequences", "--sequence", "--catalog", "--name", "--queues", "--loglevel", "--host", "--seed", "--partition",
        "--account", "--job-name", "--output", ("assets", "build-body", "--out"), ("assets", "preview", "--out")}  # fmt: skip


def options(command: Any) -> list[Any]:
    return [p for p in command.params if isinstance(p, typer.core.TyperOption) and not p.is_flag]


def outside(path: tuple[str, ...], option: Any) -> str | None:
    """A value outside the option's allowed set, or None for an option that takes any value."""
    kind = option.type_descriptor
    if kind.choices:
        return "not-a-choice"
    if option.min is not None:
        return str(option.min - 1)
    if option.max is not None:
        return str(option.max + 1)
    name = option.opts[0]
    if (*path, name) in CHECKED:
        return CHECKED[(*path, name)]
    assert name in FREE or (*path, name) in FREE or kind.is_path, (
        f"`farm {' '.join(path)} {name}`: which values?"
    )
    return None


def filled(command: Any, but: str) -> list[str]:
    """Values for the command's required parameters (but one), so that only the value under test is wrong."""
    args: list[str] = []
    for param in command.params:
        if param.required and param.name != but:
            value = str(param.type_descriptor.choices[0]) if param.type_descriptor.choices else "x"
            args += [param.opts[0], value] if isinstance(param, typer.core.TyperOption) else [value]
    return args


def one_usage_sentence(run: Any) -> str:
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert run.code == USAGE and len(lines) == 1 and lines[0].startswith("error: "), (run.code, run.err)
    assert "Traceback" not in run.err and "Value error" not in run.err and "Input should" not in run.err
    return lines[0]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=NAMES)
def test_an_unknown_option_is_bad_usage(farm, path, command):
    message = one_usage_sentence(farm(*path, "--no-such-option"))
    assert (
        "No such option: --no-such-option" in message
        and f"see `{' '.join(('farm', *path))} --help`" in message
    )


BAD_VALUES = [
    (path, command, option, value)
    for path, command in COMMANDS
    for option in options(command)
    if (value := outside(path, option)) is not None
]


@pytest.mark.parametrize(
    ("path", "command", "option", "value"),
    BAD_VALUES,
    ids=[f"{' '.join(p)} {o.opts[0]}" for p, _, o, _ in BAD_VALUES],
)
def test_a_value_outside_an_options_set_is_bad_usage_in_one_sentence(farm, path, command, option, value):
    message = one_usage_sentence(farm(*path, *filled(command, option.name), option.opts[0], value))
    assert option.opts[0] in message and value in message, message
    if option.type_descriptor.choices:  # it says what is allowed
        assert "is not one of " + ", ".join(option.type_descriptor.choices) in message, message
    elif option.min is not None:
        assert str(option.min) in message and ("whole number" in message or "a number" in message), message


def test_the_walk_found_the_options_new_users_met():
    tested = {(*p, o.opts[0]) for p, _, o, _ in BAD_VALUES}
    assert {("enqueue", "--runs"), ("enqueue", "--split"), ("enqueue", "--people"), ("export", "shards", "--image"),
            ("render-clip", "--engine"), ("worker", "--device"), ("bookkeeper", "--port"), ("enqueue", "--camera-motion"),
            ("enqueue", "--shutter"), ("render-clip", "--people"), ("render-clip", "--shutter")} <= tested  # fmt: skip


def test_the_complaints_in_the_users_words(farm):
    runs = one_usage_sentence(farm("enqueue", "--sequences", "x", "--runs", "5"))
    assert "'--runs': '5' is not a comma-separated list of 0, 1 and 2" in runs
    split = one_usage_sentence(farm("enqueue", "--sequences", "x", "--split", "validation"))
    assert "'--split': 'validation' is not one of train, test; see `farm enqueue --help`" in split
    image = one_usage_sentence(farm("export", "shards", "--out", "x", "--image", "bmp"))
    assert "'--image': 'bmp' is not one of png, jpg" in image
    run = one_usage_sentence(farm("render-clip", "--sequence", "x", "--run", "7"))
    assert "'--run': '7' is not a whole number from 0 to 2" in run
    # Celery's own options go after `--`: before it, an unknown option is a mistake, not Celery's.
    assert "No such option: --max-tasks-per-child" in one_usage_sentence(
        farm("worker", "--max-tasks-per-child", "5")
    )


# --- help: flags take no value ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=NAMES)
def test_help_shows_no_value_after_a_flag(farm, path, command):
    run = farm(*path, "--help")
    assert run.code == OK and "--help" in run.out and "<bool>" not in run.out, run.out
    if path == ("enqueue",):
        (line,) = [line for line in run.out.splitlines() if "--dry-run" in line]
        assert re.search(r"--dry-run +Plan and count", line), line
        assert re.search(r"--split +<train\|test>", run.out)  # a value's type stays


# --- output: results on stdout, whole lines where stdout is no terminal ------------------------------------


def test_results_go_to_stdout_and_say_what_was_done(farm):
    created = farm("db", "upgrade")
    assert created.code == OK and not created.err
    assert re.search(r"database sqlite:///.*farm\.db: created the schema at revision \d+", created.out), (
        created.out
    )
    again = farm("db", "upgrade")
    assert re.search(r": already up to date at revision \d+$", again.out.strip()), again.out

    imported = farm("catalog", "import", "builtin")
    assert imported.code == OK and not imported.err and "catalog 'builtin': " in imported.out
    enqueued = farm("enqueue", "--sequences", "builtin_all", "--limit", "1")
    assert enqueued.code == OK and not enqueued.err, enqueued.err
    assert (
        enqueued.out.startswith("planned 1 clip (1 train, 0 test), ")
        and "; 1 new clip queued" in enqueued.out
    )


def test_a_dry_run_counts_the_clips_it_would_add_and_adds_none(farm):
    assert farm("catalog", "import", "builtin").code == OK
    dry = json.loads(
        farm("enqueue", "--sequences", "builtin_all", "--limit", "10", "--dry-run", "--json").out
    )
    assert dry["clips"]["total"] == dry["new_clips"] == 10
    words = farm("enqueue", "--sequences", "builtin_all", "--limit", "10", "--dry-run")
    assert (
        words.code == OK
        and "; 10 new clips would be stored and queued (a dry run: nothing written)" in words.out
    )
    assert json.loads(farm("status", "--json").out)["clips"]["queued"] == 0  # nothing added

    assert (
        json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", "4", "--json").out)["new_clips"]
        == 4
    )
    again = json.loads(
        farm("enqueue", "--sequences", "builtin_all", "--limit", "10", "--dry-run", "--json").out
    )
    assert again["clips"]["total"] == 10 and again["new_clips"] == 6
    assert json.loads(farm("status", "--json").out)["clips"]["queued"] == 4


def test_a_pipe_gets_whole_lines(tmp_path):
    """A real pipe, where rich would otherwise wrap at 80 columns."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no COLUMNS, no FARM_* settings
    for args in (["catalog", "import", "builtin"], ["enqueue", "--sequences", "builtin_all", "--dry-run"]):
        run = subprocess.run(
            [FARM, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == OK, run.stderr
    (line,) = run.stdout.splitlines()
    assert len(line) > 80 and line.endswith("(a dry run: nothing written)"), run.stdout


def test_a_table_off_a_terminal_splits_no_word():
    table = Table("clip", "problems")
    table.add_row("walk_s01_01_c0001", " ".join(["flow has non-finite values."] * 8))
    console = FarmConsole(file=io.StringIO())
    console.print(table)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 5 and "┃ problems" in lines[1] and lines[3].count("non-finite") == 8, lines
    terminal = FarmConsole(file=io.StringIO(), force_terminal=True, width=40)
    assert terminal.width == 40  # a terminal still wraps at its width


# --- nothing to check is no error; counts in words -----------------------------------------------------------


def test_qc_and_verify_agree_that_no_done_clips_is_nothing_to_check(farm):
    assert farm("db", "upgrade").code == OK
    for command in ("qc", "verify"):
        run = farm(command)
        assert run.code == OK and not run.err, (command, run.err)
        assert "has no done clips to check" in run.out, (command, run.out)
    assert farm("qc", "--json").out.strip() == "[]"


def test_one_is_singular(farm, tmp_path):
    assert farm("catalog", "import", "builtin").code == OK
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "1").code == OK
    with sqlite3.connect(tmp_path / "farm.db") as conn:
        conn.execute("UPDATE clips SET status = 'done'")
    run = farm("export", "index", "--out", str(tmp_path / "index.parquet"))
    assert run.code == OK and run.out.startswith("wrote 1 clip to "), (run.out, run.err)
