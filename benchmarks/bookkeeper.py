"""The bookkeeping service's endpoints with the paper's 67,529 clips in PostgreSQL, in realistic states.

    .venv/bin/python benchmarks/bookkeeper.py [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]
                                              [--redis redis://127.0.0.1:6379/0] [-n 20] [--keep]

Makes a scratch database, imports a SURREAL-shaped smpl_data.npz (zero poses) and enqueues cmu_all on a
scratch Redis queue (deleted right away), then moves the clips into states with plain UPDATEs: 55% done
(finished over the last 36 hours), 2% failed (five reasons), ~32 running, the rest queued, and 40 workers
(32 alive), and vacuums. It serves the bookkeeper on a free local port and requests each endpoint N times,
on the schema as migrated and again with the indexes proposed below, and prints the medians. Target: every
JSON endpoint under 100 ms. The scratch database is dropped unless --keep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

REASONS = (
    "render timed out after 1800 s",
    "texture asset not found: textures/female/nongrey_female_0110.jpg",
    "CUDA error: out of memory",
    "motion sequence 143_42 has NaN poses",
    "upload to storage failed: connection reset by peer",
)

# Deterministic states from the clip id (no randomness needed): a multiplicative hash spreads them out.
STATES_SQL = """
UPDATE clips SET
  status = CASE
    WHEN id % 2111 = 7 THEN 'running'
    WHEN (id * 2654435761) % 100 < 55 THEN 'done'
    WHEN (id * 2654435761) % 100 < 57 THEN 'failed'
    ELSE 'queued' END,
  attempts = CASE WHEN id % 2111 = 7 THEN 1 WHEN (id * 2654435761) % 100 < 55 THEN 1
                  WHEN (id * 2654435761) % 100 < 57 THEN 3 ELSE 0 END;
UPDATE clips SET
  render_seconds = 120 + (id * 37) % 600,
  finished_at = now() - make_interval(secs => (id * 7919) % (36 * 3600)),
  frames_done = frame_stop - frame_start,
  worker = 'gpu' || (id % 40) || '@render-host-' || (id % 5),
  output_uri = 's3://surreal/' || name
WHERE status = 'done';
UPDATE clips SET started_at = finished_at - make_interval(secs => render_seconds), updated_at = finished_at
WHERE status = 'done';
UPDATE clips SET error = (ARRAY[{reasons}])[1 + id % 5], updated_at = now() - make_interval(secs => id % 86400)
WHERE status = 'failed';
UPDATE clips SET started_at = now() - make_interval(secs => id % 600), updated_at = now(),
  worker = 'gpu' || (id % 40) || '@render-host-' || (id % 5)
WHERE status = 'running';
INSERT INTO workers (name, hostname, device, started_at, last_seen_at, clips_done, current_clip_id)
SELECT 'gpu' || g || '@render-host-' || (g % 5), 'render-host-' || (g % 5), 'optix',
  now() - interval '2 days', now() - make_interval(secs => CASE WHEN g < 32 THEN g ELSE 3600 * g END),
  1000 + g, (SELECT id FROM clips WHERE status = 'running' ORDER BY id OFFSET g LIMIT 1)
FROM generate_series(0, 39) AS g;
"""

# What the bookkeeper's queries need to stay fast as the farm grows (proposed as migration 0003). The first
# two let the per-state/split/run aggregates and the recent-finished scans read indexes only (not a partial
# index: psycopg prepares repeated queries, and a generic plan cannot match `status = $1` to a predicate);
# the third gives pages of clips in one state, newest first, without sorting the state.
PROPOSED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_clips_progress ON clips (split, run, status) "
    "INCLUDE (frame_start, frame_stop, frames_done)",
    "CREATE INDEX IF NOT EXISTS ix_clips_status_finished ON clips (status, finished_at) "
    "INCLUDE (frames_done, render_seconds)",
    "CREATE INDEX IF NOT EXISTS ix_clips_status_updated ON clips (status, updated_at, id)",
)

ENDPOINTS = (
    "/api/progress",
    "/api/clips",
    "/api/clips?state=queued",
    "/api/clips?state=failed",
    "/api/failures",
    "/api/workers",
    "/api/throughput",
    "/metrics",
    "/",
)


def fill(url: str, redis_url: str) -> None:
    """Import and enqueue the paper's plan into the database at `url`, then move clips into states."""
    import redis
    from sqlalchemy import create_engine
    from surreal_data import write_surreal_npz

    from farm.cli import main as farm
    from farm.settings import get_settings

    queue = f"render-bench-{uuid.uuid4().hex[:8]}"
    os.environ.update(FARM_DATABASE_URL=url, FARM_BROKER_URL=redis_url, FARM_RENDER_QUEUE=queue)
    get_settings.cache_clear()
    broker = redis.Redis.from_url(redis_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            npz = write_surreal_npz(Path(tmp) / "smpl_data.npz")
            for argv in (["db", "upgrade"], ["catalog", "import", "surreal", str(npz)]):
                _farm(farm, argv)
            _farm(farm, ["enqueue", "--sequences", "cmu_all", "--json"])
    finally:
        for key in broker.scan_iter(f"*{queue}*"):
            broker.delete(key)
    reasons = ", ".join("'" + r.replace("'", "''") + "'" for r in REASONS)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(STATES_SQL.format(reasons=reasons))  # type: ignore[union-attr]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE clips")  # what autovacuum does on a live farm
    engine.dispose()


def _farm(farm: object, argv: list[str]) -> None:
    try:
        farm(argv)  # type: ignore[operator]
    except SystemExit as exc:
        if exc.code:
            raise


def time_endpoints(base: str, n: int) -> dict[str, tuple[float, float, int]]:
    """{path: (median ms, slowest ms, bytes)} over n requests each, after one warm-up request."""
    out = {}
    for path in ENDPOINTS:
        samples, size = [], 0
        for _ in range(n + 1):
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=30) as response:
                size = len(response.read())
            samples.append(time.perf_counter() - t0)
        samples = samples[1:]
        out[path] = (1000 * statistics.median(samples), 1000 * max(samples), size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=20, help="requests per endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is printed)")
    parser.add_argument("--db", help="time against this already filled database instead (made with --keep)")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import create_engine, text

    from farm import db
    from farm.bookkeeper import Background
    from farm.settings import get_settings

    name = f"farm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    if args.db:
        url, args.keep = args.db, True
    else:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.pg.rsplit("/", 1)[0] + f"/{name}"
    fill_seconds = 0.0
    try:
        start = time.perf_counter()
        if not args.db:
            fill(url, args.redis)
            fill_seconds = time.perf_counter() - start
        os.environ["FARM_DATABASE_URL"] = url
        with db.session_scope(url) as session:
            counts = dict(session.execute(text("SELECT status, count(*) FROM clips GROUP BY status")).all())
        get_settings.cache_clear()
        with tempfile.TemporaryDirectory() as storage:
            os.environ["FARM_STORAGE_URL"] = storage
            server = Background(get_settings())
            try:
                plain = time_endpoints(server.url, args.n)
                with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
                    for statement in PROPOSED_INDEXES:
                        conn.execute(text(statement))
                    conn.execute(text("VACUUM ANALYZE clips"))
                indexed = time_endpoints(server.url, args.n)
            finally:
                server.stop()
    finally:
        db.get_engine(url).dispose()
        if args.keep:
            print(f"kept {url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    state_text = ", ".join(f"{s} {counts.get(s, 0):,}" for s in ("queued", "running", "done", "failed"))
    table = Table(
        "endpoint",
        f"median of {args.n}, schema as migrated",
        "with the proposed indexes",
        "slowest",
        "size",
        title=f"bookkeeper benchmark, {sum(counts.values()):,} clips ({state_text}), {os.cpu_count()} cores",
        caption=f"fill (import + enqueue + UPDATE states): {fill_seconds:.0f} s; target: JSON API < 100 ms",
    )
    for path in ENDPOINTS:
        mark = "[bold]" if path.startswith("/api") else ""
        table.add_row(
            path,
            f"{plain[path][0]:.1f} ms",
            f"{mark}{indexed[path][0]:.1f} ms",
            f"{indexed[path][1]:.1f} ms",
            f"{indexed[path][2] / 1024:.1f} KiB",
        )
    Console(width=120).print(table)  # wide enough for the endpoint paths


if __name__ == "__main__":
    main()
