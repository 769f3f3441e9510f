"""Import + plan + enqueue of the paper's full 67,529-clip plan on PostgreSQL and Redis, and `farm status`.

    .venv/bin/python benchmarks/enqueue.py [--pg postgresql://postgres@127.0.0.1/postgres] [--redis redis://127.0.0.1:6379/0]
                                           [--clips N] [--small]

Builds a SURREAL-shaped smpl_data.npz from the reference table (zero poses), makes a scratch database and
queue, times each step, prints a table, and drops what it made. Targets on the 2-core machine: the whole
enqueue in 30 s or less, status in 200 ms or less. --clips N enqueues only the plan's first N clips (the
import stays whole); --small is --clips 500 with 3 status queries, the quick run that `make test` does.
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

from scratch import PG_ADMIN_URL, REDIS_URL, farm, scratch_farm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=PG_ADMIN_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument(
        "--clips", type=int, default=None, help="only the plan's first N clips (default: all)"
    )
    parser.add_argument("--small", action="store_true", help="a quick run: --clips 500, 3 status queries")
    args = parser.parse_args()
    if args.small:
        args.clips = 500
    limit = ["--limit", str(args.clips)] if args.clips else []
    status_runs = 3 if args.small else 20

    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import text
    from surreal_data import write_surreal_npz

    from farm.core import db
    from farm.core.celery_app import celery_for, clips_in_broker
    from farm.core.settings import get_settings
    from farm.dashboard.progress import farm_status

    rows: list[tuple[str, str]] = []

    def timed(label: str, *argv: str) -> float:
        start = time.perf_counter()
        farm(*argv)
        elapsed = time.perf_counter() - start
        rows.append((label, f"{elapsed:.2f} s"))
        return elapsed

    with scratch_farm(args.pg, args.redis) as scratch, tempfile.TemporaryDirectory() as tmp:
        npz = write_surreal_npz(Path(tmp) / "smpl_data.npz")
        t_import = timed("catalog import surreal (2,667 sequences)", "catalog", "import", "surreal", str(npz))
        t_enqueue = timed(
            "enqueue cmu_all (plan + store + queue)", "enqueue", "--sequences", "cmu_all", "--json", *limit
        )
        rows.append(("import + plan + enqueue (target <= 30 s)", f"[bold]{t_import + t_enqueue:.2f} s[/]"))
        timed("enqueue cmu_all again (adds nothing)", "enqueue", "--sequences", "cmu_all", "--json", *limit)
        with db.session_scope(scratch.database_url) as session:
            clips = session.execute(text("SELECT count(*) FROM clips")).scalar()
        queued = len(clips_in_broker(celery_for(get_settings())))
        rows.append(("clips stored / messages queued", f"{clips:,} / {queued:,}"))

        samples = []
        for _ in range(status_runs):
            start = time.perf_counter()
            with db.session_scope(scratch.database_url) as session:
                farm_status(session, get_settings().target_frames)
            samples.append(time.perf_counter() - start)
        rows.append(
            (
                f"status query, median of {status_runs} (target <= 200 ms)",
                f"[bold]{1000 * statistics.median(samples):.0f} ms[/]",
            )
        )
        start = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "farm"), "status", "--json"], check=True, capture_output=True
        )
        rows.append(
            ("`farm status --json` as a new process", f"{1000 * (time.perf_counter() - start):.0f} ms")
        )

    table = Table(
        f"step ({clips:,} clips, PostgreSQL + Redis)",
        "time",
        title=f"enqueue benchmark, {os.cpu_count()} cores",
    )
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)


if __name__ == "__main__":
    main()
