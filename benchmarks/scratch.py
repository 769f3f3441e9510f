"""A scratch farm for benchmarks: a new PostgreSQL database and Redis queue, removed afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import _paths  # noqa: F401  (the checkout, then tests/ for tests/surreal_data.py, first on sys.path)

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Scratch:
    database_url: str
    queue: str


def farm(*argv: str) -> None:
    """Run a `farm` command in this process; typer always exits, so only a non-zero exit is an error."""
    from farm.cli.main import main

    try:
        main(list(argv))
    except SystemExit as exc:
        if exc.code:
            raise


@contextmanager
def scratch_farm(
    pg_admin_url: str = PG_ADMIN_URL, redis_url: str = REDIS_URL, keep: bool = False
) -> Iterator[Scratch]:
    """FARM_DATABASE_URL, FARM_BROKER_URL and FARM_RENDER_QUEUE pointing at a new, migrated database and a
    new queue, for the duration of the block."""
    import redis
    from sqlalchemy import create_engine, text

    from farm.core import db
    from farm.core.settings import get_settings

    name = f"farm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = Scratch(pg_admin_url.rsplit("/", 1)[0] + f"/{name}", f"render-{name}")
    os.environ.update(
        FARM_DATABASE_URL=scratch.database_url, FARM_BROKER_URL=redis_url, FARM_RENDER_QUEUE=scratch.queue
    )
    get_settings.cache_clear()
    broker = redis.Redis.from_url(redis_url)
    try:
        farm("db", "upgrade")
        yield scratch
    finally:
        db.get_engine(scratch.database_url).dispose()
        if keep:
            print(f"kept {scratch.database_url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for key in broker.scan_iter(f"*{scratch.queue}*"):
            broker.delete(key)
        admin.dispose()
