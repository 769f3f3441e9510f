"""Start-up of the `farm` command: `farm --help` and `farm status --json` as new processes.

    .venv/bin/python benchmarks/cli_start.py [-n 10] [--clips 300] [--small]

Makes a SQLite farm in a scratch folder (the built-in catalog and the plan's first --clips clips, queued on the
embedded broker), then runs each command N times as a new process, the way a shell does, and prints the median
and 90th percentile of the wall time, with `python -c pass` for the interpreter's own start. Target on the
2-core machine: 300 ms or less for both commands. --small is -n 3, the quick run of `make test`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _paths  # noqa: F401  (the checkout first on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="runs of each command")
    parser.add_argument("--clips", type=int, default=300, help="clips that `farm status` reports on")
    parser.add_argument("--small", action="store_true", help="a quick run: -n 3")
    args = parser.parse_args()
    if args.small:
        args.n = 3

    from rich.console import Console
    from rich.table import Table

    farm = str(Path(sys.executable).parent / "farm")
    commands = {
        "`farm --help`": [farm, "--help"],
        f"`farm status --json` ({args.clips:,} clips, SQLite)": [farm, "status", "--json"],
        "`python -c pass` (the interpreter alone)": [sys.executable, "-c", "pass"],
    }
    with tempfile.TemporaryDirectory(prefix="cli-start-") as folder:
        # A user's farm: its own settings only, and bytecode caches written on the first run as usual.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_") and k != "PYTHONPATH"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["FARM_DATABASE_URL"] = f"sqlite:///{folder}/farm.db"

        def run(command: list[str]) -> float:
            start = time.perf_counter()
            subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
            return time.perf_counter() - start

        run([farm, "catalog", "import", "builtin"])
        run([farm, "enqueue", "--sequences", "builtin_all", "--limit", str(args.clips)])
        times: dict[str, list[float]] = {label: [] for label in commands}
        for command in commands.values():
            run(command)  # warm-up: caches written, files in the page cache
        for _ in range(args.n):  # round robin, so that load from elsewhere falls on every command alike
            for label, command in commands.items():
                times[label].append(run(command))

    table = Table(
        f"command (new process, {args.n} runs)",
        "median",
        "p90",
        title=f"CLI start-up, {os.cpu_count()} cores (target: 300 ms or less)",
    )
    for label, seconds in times.items():
        p90 = statistics.quantiles(seconds, n=10, method="inclusive")[-1]
        table.add_row(label, f"{1000 * statistics.median(seconds):.0f} ms", f"{1000 * p90:.0f} ms")
    Console().print(table)


if __name__ == "__main__":
    main()
