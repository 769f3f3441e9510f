"""Database engine, sessions, schema migrations, and clear errors when the database cannot be used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from farm.core.errors import FarmError, ServiceUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# The newest migration in migrations/versions and the ones before it (a test keeps these true).
SCHEMA_REVISION = "0007"
OLDER_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005", "0006")


def utcnow() -> datetime:
    return datetime.now(UTC)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages (database and broker URLs alike)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not parseable: hide everything before the last '@'
        head, at, tail = url.rpartition("@")
        if not at:
            return url
        scheme = head.split("://", 1)[0] + "://" if "://" in head else ""
        return f"{scheme}***@{tail}"


@lru_cache
def get_engine(url: str, autocommit: bool = False) -> Engine:
    """The engine for `url`; with `autocommit`, a second pool whose connections run each statement as its own
    transaction (set once per connection, not at every checkout)."""
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise FarmError(
            f"FARM_DATABASE_URL {safe_url(url)!r} is not a database URL; use e.g. "
            "postgresql+psycopg://user@host/db or sqlite:///farm.db"
        ) from exc
    except ValueError:  # the port is not a number (host:abc)
        parsed = None
    # A bad port is a bad setting, not an unreachable server (the driver would fail it as a connection error).
    if parsed is None or (parsed.port is not None and not 1 <= parsed.port <= 65535):
        raise FarmError(
            f"FARM_DATABASE_URL {safe_url(url)!r} has a port that is not a number from 1 to 65535; "
            "fix the URL, e.g. postgresql+psycopg://user@host:5432/db"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    if parsed.drivername.startswith("sqlite"):
        engine = create_engine(parsed, connect_args={"timeout": 60}, **isolation)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets the demo's worker and the status command read while another process writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # No pre-ping: it costs a round trip per transaction, a third of a worker's claim. A connection the
    # server dropped fails one transaction and invalidates the pool; the farm's protocol absorbs that (the
    # clip stays queued and `reconcile` sends it again).
    if not parsed.drivername.startswith("postgresql"):
        raise FarmError(
            f"FARM_DATABASE_URL {safe_url(url)!r} names the driver {parsed.drivername!r}, which the farm does "
            "not ship; use postgresql://user@host/db for a cluster or sqlite:///farm.db on one machine"
        )
    return create_engine(parsed, pool_recycle=3600, connect_args={"connect_timeout": 5}, **isolation)


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailable(
            f"cannot reach the database at {safe_url(str(engine.url))} ({reason}); "
            "check FARM_DATABASE_URL and that the server is running"
        ) from exc


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Apply every migration (`farm db upgrade`)."""
    from alembic import command

    engine = get_engine(url)
    check_reachable(engine)
    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, read directly (importing Alembic costs more than a status query)."""
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


_ready: set[str] = set()


def ready_engine(url: str) -> Engine:
    """An engine whose schema is at SCHEMA_REVISION, the newest migration.

    The embedded SQLite default is migrated on first use; a server database must be migrated with
    `farm db upgrade` (in a cluster that is the one-shot migration service), so that workers never race.
    """
    engine = get_engine(url)
    if url in _ready:
        return engine
    check_reachable(engine)
    revision = current_revision(engine)
    if revision != SCHEMA_REVISION:
        if revision is not None and revision not in OLDER_REVISIONS:
            raise FarmError(
                f"the database at {safe_url(url)} is at schema {revision}, newer than this farm's "
                f"{SCHEMA_REVISION}; upgrade surreal-farm on this machine"
            )
        if engine.url.get_backend_name() != "sqlite":
            state = "has no farm tables" if revision is None else f"has an older schema ({revision})"
            raise FarmError(
                f"the database at {safe_url(url)} {state}; run `farm db upgrade` against it first"
            )
        upgrade(url)
    _ready.add(url)
    return engine


@lru_cache
def _session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with _session_factory(ready_engine(url))() as session, session.begin():
        yield session


@contextmanager
def autocommit(url: str) -> Iterator[Connection]:
    """A connection on which each statement is a transaction of its own. A worker's claim, renewal and
    completion are single statements, so they go without the BEGIN and COMMIT round trips."""
    ready_engine(url)
    with get_engine(url, autocommit=True).connect() as conn:
        yield conn


# The database's clock, for every time the claim protocol writes or compares (worker/claims.py): one clock for
# every host, read inside the statement at no extra round trip.
class db_now(FunctionElement[datetime]):
    """The database's current time, or that plus a number of seconds (`db_now(bindparam("lease_s"))`).

    PostgreSQL: now() (the statement's transaction time), plus make_interval(secs => ...). SQLite:
    strftime('%Y-%m-%d %H:%M:%f', 'now', ...), UTC text to the millisecond in the same layout as the datetimes
    SQLAlchemy writes there, so comparisons with the stored text stay in order."""

    type = DateTime(timezone=True)
    name = "db_now"
    inherit_cache = True


def _offset(element: db_now, compiler: SQLCompiler, **kw: Any) -> str | None:
    clauses = list(element.clauses)
    return compiler.process(clauses[0], **kw) if clauses else None


@compiles(db_now)
def _db_now(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    offset = _offset(element, compiler, **kw)
    return "CURRENT_TIMESTAMP" if offset is None else f"(CURRENT_TIMESTAMP + {offset} * INTERVAL '1' SECOND)"


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    offset = _offset(element, compiler, **kw)
    return "now()" if offset is None else f"(now() + make_interval(secs => CAST({offset} AS FLOAT8)))"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: SQLCompiler, **kw: Any) -> str:
    offset = _offset(element, compiler, **kw)
    if offset is None:
        return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {offset}))"
