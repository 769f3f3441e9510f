"""The bookkeeping service's endpoints with the paper's 67,529 clips in PostgreSQL, in realistic states.

    .venv/bin/python benchmarks/bookkeeper.py [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]
                                              [--redis redis://127.0.0.1:6379/0] [-n 20] [--keep]
                                              [--clips N] [--small]

Makes a scratch database, imports a SURREAL-shaped smpl_data.npz (zero poses) and enqueues cmu_all on a
scratch Redis queue (deleted right away), then moves the clips into states with plain UPDATEs: 55% done
(finished over the last 36 hours), 2% failed (five reasons), ~32 running, the rest queued, and 40 workers
(32 alive), and vacuums. It serves the bookkeeper on a free local port, requests each endpoint N times and
prints the medians. Target: every JSON endpoint under 100 ms. The scratch database is dropped unless --keep.
--clips N enqueues only the plan's first N clips; --small is --clips 2000 -n 2, the quick run of `make test`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from scratch import PG_ADMIN_URL, REDIS_URL, farm, scratch_farm

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
INSERT INTO workers (name, hostname, device, started_at, last_seen_at)
SELECT 'gpu' || g || '@render-host-' || (g % 5), 'render-host-' || (g % 5), 'optix',
  now() - interval '2 days', now() - make_interval(secs => CASE WHEN g < 32 THEN g ELSE 3600 * g END)
FROM generate_series(0, 39) AS g;
"""

# What the bookkeeper's queries need to stay fast as the farm grows (proposed as migration 0003). The first
# two let the per-state/split/run aggregates and the recent-finished scans read indexes only (not a partial
# index: psycopg prepares repeated queries, and a generic plan cannot match `status = $1` to a predicate);
# the third gives pages of clips in one state, newest first, without sorting the state.
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


def fill(url: str, limit: list[str]) -> None:
    """Import and enqueue the paper's plan into the scratch database, then move clips into states."""
    from sqlalchemy import create_engine
    from surreal_data import write_surreal_npz

    with tempfile.TemporaryDirectory() as tmp:
        farm("catalog", "import", "surreal", str(write_surreal_npz(Path(tmp) / "smpl_data.npz")))
        farm("enqueue", "--sequences", "cmu_all", "--json", *limit)
    reasons = ", ".join("'" + r.replace("'", "''") + "'" for r in REASONS)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(STATES_SQL.format(reasons=reasons))  # type: ignore[union-attr]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE clips")  # what autovacuum does on a live farm


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
    parser.add_argument("--pg", default=PG_ADMIN_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument("-n", type=int, default=20, help="requests per endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is printed)")
    parser.add_argument(
        "--clips", type=int, default=None, help="only the plan's first N clips (default: all)"
    )
    parser.add_argument("--small", action="store_true", help="a quick run: --clips 2000 -n 2")
    args = parser.parse_args()
    if args.small:
        args.clips, args.n = 2000, 2

    from bookkeeper_server import Background  # in tests/, which scratch puts on the path
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import text

    from farm.core import db
    from farm.core.settings import get_settings

    with (
        scratch_farm(args.pg, args.redis, keep=args.keep) as scratch,
        tempfile.TemporaryDirectory() as storage,
    ):
        start = time.perf_counter()
        fill(scratch.database_url, ["--limit", str(args.clips)] if args.clips else [])
        fill_seconds = time.perf_counter() - start
        with db.session_scope(scratch.database_url) as session:
            counts = dict(session.execute(text("SELECT status, count(*) FROM clips GROUP BY status")).all())
        os.environ["FARM_STORAGE_URL"] = storage
        get_settings.cache_clear()
        server = Background(get_settings())
        try:
            timings = time_endpoints(server.url, args.n)
        finally:
            server.stop()

    state_text = ", ".join(f"{s} {counts.get(s, 0):,}" for s in ("queued", "running", "done", "failed"))
    table = Table(
        "endpoint",
        f"median of {args.n}",
        "slowest",
        "size",
        title=f"bookkeeper benchmark, {sum(counts.values()):,} clips ({state_text}), {os.cpu_count()} cores",
        caption=f"fill (import + enqueue + UPDATE states): {fill_seconds:.0f} s; target: JSON API < 100 ms",
    )
    for path in ENDPOINTS:
        mark = "[bold]" if path.startswith("/api") else ""
        median, slowest, size = timings[path]
        table.add_row(path, f"{mark}{median:.1f} ms", f"{slowest:.1f} ms", f"{size / 1024:.1f} KiB")
    Console(width=120).print(table)  # wide enough for the endpoint paths


if __name__ == "__main__":
    main()
