"""Import + plan + enqueue of the paper's full 67,529-clip plan on PostgreSQL and Redis, and `farm status`.

    .venv/bin/python benchmarks/enqueue.py [--pg postgresql://postgres@127.0.0.1/postgres] [--redis redis://127.0.0.1:6379/0]

Builds a SURREAL-shaped smpl_data.npz from the reference table (zero poses), makes a scratch database and
queue, times each step, prints a table, and drops what it made. Targets on the 2-core machine: the whole
enqueue in 30 s or less, status in 200 ms or less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    import redis
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import create_engine, text
    from surreal_data import write_surreal_npz

    from farm import db
    from farm.bookkeeping import farm_status
    from farm.cli import main as farm
    from farm.settings import get_settings

    name = f"farm_bench_{uuid.uuid4().hex[:8]}"
    queue = f"render-bench-{name}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg.rsplit("/", 1)[0] + f"/{name}"
    os.environ.update(FARM_DATABASE_URL=url, FARM_BROKER_URL=args.redis, FARM_RENDER_QUEUE=queue)
    get_settings.cache_clear()
    broker = redis.Redis.from_url(args.redis)
    rows: list[tuple[str, str]] = []

    def timed(label: str, *argv: str) -> float:
        start = time.perf_counter()
        try:
            farm(list(argv))
        except SystemExit as exc:
            if exc.code:
                raise
        elapsed = time.perf_counter() - start
        rows.append((label, f"{elapsed:.2f} s"))
        return elapsed

    try:
        with tempfile.TemporaryDirectory() as tmp:
            npz = write_surreal_npz(Path(tmp) / "smpl_data.npz")
            timed("farm db upgrade", "db", "upgrade")
            t_import = timed(
                "catalog import surreal (2,667 sequences)", "catalog", "import", "surreal", str(npz)
            )
            t_enqueue = timed(
                "enqueue cmu_all (plan + store + queue)", "enqueue", "--sequences", "cmu_all", "--json"
            )
            rows.append(
                ("import + plan + enqueue (target <= 30 s)", f"[bold]{t_import + t_enqueue:.2f} s[/]")
            )
            timed("enqueue cmu_all again (adds nothing)", "enqueue", "--sequences", "cmu_all", "--json")
        with db.session_scope(url) as session:
            clips = session.execute(text("SELECT count(*) FROM clips")).scalar()
        rows.append(("clips stored / messages queued", f"{clips:,} / {broker.llen(queue):,}"))

        samples = []
        for _ in range(20):
            start = time.perf_counter()
            with db.session_scope(url) as session:
                farm_status(session, get_settings().target_frames)
            samples.append(time.perf_counter() - start)
        rows.append(
            (
                "status query, median of 20 (target <= 200 ms)",
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
    finally:
        db.get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for key in broker.scan_iter(f"*{queue}*"):
            broker.delete(key)

    table = Table(
        "step (67,529 clips, PostgreSQL + Redis)", "time", title=f"enqueue benchmark, {os.cpu_count()} cores"
    )
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)


if __name__ == "__main__":
    main()
