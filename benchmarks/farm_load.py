"""Claims and completions through the real PostgreSQL and Redis with 16 worker processes.

    .venv/bin/python benchmarks/farm_load.py [--clips 2000] [--processes 16] [--workers 2] [--scratch DIR] [--small]

The workers render nothing: they run the farm's own claim/store/complete protocol (worker/process.py) with
`quick_test_producer`, a stand-in that writes one small text file per clip. It lives only in this file, so
it can never be selected for real output. Target on the 2-core machine: at least 200 clips/s through the
database and broker. The script then proves that every clip ended done exactly once and that nothing was lost.

The 16 processes run in 2 Celery workers of 8, as a cluster runs several workers (one per GPU): a single Celery
parent process dispatching to all 16 children, acknowledging and sending their events, becomes the limit of
its own on 2 cores (`--workers 1`).

The local storage and the workers' temporary folders go under --scratch, by default /dev/shm (memory): on
this VM's disk, 16 processes fsyncing 2,000 small files measure the disk, not the database and broker.
Pass --scratch /tmp to include the disk. --small is --clips 100 --processes 2 --workers 1, the quick run of
`make test`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _paths import ROOT
from scratch import PG_ADMIN_URL, REDIS_URL, farm, scratch_farm


def quick_test_producer(spec, folder: Path) -> tuple[list[Path], int, None]:  # type: ignore[no-untyped-def]
    """NOT A RENDERER: one small file naming the clip, so the protocol has something to store."""
    relative = Path(spec.output_dir) / f"{spec.name}_quick-test.txt"
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    (folder / relative).write_text(f"{spec.name} (quick test producer, no pixels)\n")
    return [relative], spec.frame_count, None  # no pixels, so no quality statistics


def load_worker_app():  # type: ignore[no-untyped-def]
    """The benchmark's worker side: the farm's Celery app with render_clip bound to the stand-in."""
    from farm.core.celery_app import RENDER_TASK, celery_for
    from farm.core.settings import get_settings
    from farm.core.storage import open_storage
    from worker.process import WorkerContext, process_clip

    settings = get_settings()
    app = celery_for(settings)
    context = WorkerContext(settings, f"load:{os.getpid()}", quick_test_producer, open_storage(settings))

    @app.task(name=RENDER_TASK)
    def render_clip(clip_id: int) -> str:
        context.name = f"load:{os.getpid()}"  # pool processes are forked from one parent
        return process_clip(clip_id, context)

    return app


if os.environ.get("FARM_LOAD_WORKER"):  # imported by `celery -A farm_load worker` in the benchmark
    app = load_worker_app()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="Celery workers sharing the processes")
    parser.add_argument(
        "--scratch",
        default="/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir(),
        help="folder for the local storage and the workers' temporary files",
    )
    parser.add_argument("--pg", default=PG_ADMIN_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument(
        "--small", action="store_true", help="a quick run: --clips 100 --processes 2 --workers 1"
    )
    args = parser.parse_args()
    if args.small:
        args.clips, args.processes, args.workers = 100, 2, 1

    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import func, select

    from farm.core import db
    from farm.core.celery_app import celery_for, send_render_tasks
    from farm.core.models import Clip, ClipEvent
    from farm.core.settings import get_settings

    with (
        scratch_farm(args.pg, args.redis) as scratch,
        tempfile.TemporaryDirectory(prefix="farm-load-", dir=args.scratch) as storage,
    ):
        os.environ["FARM_STORAGE_URL"] = storage
        get_settings.cache_clear()
        farm("catalog", "import", "builtin")
        farm("enqueue", "--sequences", "builtin_all", "--limit", str(args.clips))
        with db.session_scope(scratch.database_url) as session:
            ids = list(session.scalars(select(Clip.id).order_by(Clip.id)))
        send_render_tasks(
            celery_for(get_settings()), ids[::10]
        )  # every 10th clip delivered twice, on purpose

        started, started_at = time.perf_counter(), datetime.now(UTC)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "farm_load",
                    "worker",
                    "--pool",
                    "prefork",
                    "-n",
                    f"load{n}@%h",
                    "--concurrency",
                    str(args.processes // args.workers),
                    "--loglevel",
                    "error",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=Path(__file__).parent,
                env={**os.environ, "PYTHONPATH": str(ROOT), "FARM_LOAD_WORKER": "1", "TMPDIR": args.scratch},
            )  # fmt: skip
            for n in range(args.workers)
        ]
        try:
            while (
                True
            ):  # polled seldom, to leave the CPU to the farm; the rate comes from the clips' own times
                with db.session_scope(scratch.database_url) as session:
                    done = session.scalar(select(func.count()).where(Clip.status == "done")) or 0
                if done >= len(ids):
                    break
                if time.perf_counter() - started > 600:
                    raise SystemExit(f"only {done} of {len(ids)} clips done after 600 s")
                time.sleep(0.5)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
        with db.session_scope(scratch.database_url) as session:
            done_events = dict(
                session.execute(
                    select(ClipEvent.clip_id, func.count())
                    .where(ClipEvent.to_status == "done")
                    .group_by(ClipEvent.clip_id)
                ).all()
            )
            statuses = dict(session.execute(select(Clip.status, func.count()).group_by(Clip.status)).all())
            attempts = session.scalar(select(func.max(Clip.attempts)))
            first, last = session.execute(
                select(func.min(Clip.finished_at), func.max(Clip.finished_at))
            ).one()

    steady = (len(ids) - 1) / (last - first).total_seconds()  # from the first completion to the last
    title = f"farm load: {len(ids)} clips, {args.processes} processes in {args.workers} Celery worker(s)"
    table = Table("measure", "value", title=title)
    table.add_row("clips", f"{len(ids):,} (+{len(ids[::10])} duplicate messages)")
    table.add_row("storage and temporary files", args.scratch)
    wall = (last - started_at).total_seconds()
    table.add_row("wall time from worker start to the last completion", f"{wall:.1f} s")
    table.add_row("claims+completions/s, from first completion (target >= 200)", f"[bold]{steady:.0f}[/]")
    table.add_row("claims+completions/s, including worker start-up", f"{len(ids) / wall:.0f}")
    table.add_row("clips done / clips", f"{statuses.get('done', 0)} / {len(ids)}")
    table.add_row("clips with exactly one 'done' event", f"{sum(1 for n in done_events.values() if n == 1)}")
    table.add_row(
        "clips done twice / lost",
        f"{sum(1 for n in done_events.values() if n > 1)} / {len(ids) - len(done_events)}",
    )
    table.add_row("most attempts on a clip", str(attempts))
    Console().print(table)
    if not (
        statuses == {"done": len(ids)} and len(done_events) == len(ids) and set(done_events.values()) == {1}
    ):
        raise SystemExit("a clip was lost or done twice")


if __name__ == "__main__":
    main()
