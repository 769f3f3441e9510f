"""The Alembic migrations build exactly the models' schema, on PostgreSQL and on SQLite."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from farm.core import db
from farm.core.models import Base


def assert_matches_models(url):
    db.upgrade(url)
    with create_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    assert db.current_revision(db.get_engine(url)) == db.SCHEMA_REVISION


def test_schema_revision_constants_follow_the_migrations():
    script = ScriptDirectory.from_config(db._alembic_config("sqlite://"))
    revisions = [r.revision for r in script.walk_revisions()]
    assert revisions[0] == db.SCHEMA_REVISION
    assert set(revisions[1:]) == set(db.OLDER_REVISIONS)


def test_migrations_on_sqlite(tmp_path):
    assert_matches_models(f"sqlite:///{tmp_path}/farm.db")


@pytest.mark.services
def test_migrations_on_postgresql(pg_url):
    assert_matches_models(pg_url)
    db.upgrade(pg_url)  # idempotent


@pytest.mark.services
def test_a_server_database_must_be_upgraded_explicitly(tmp_path, farm, farm_env, pg_url):
    from sqlalchemy import text

    admin = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS farm_test_empty WITH (FORCE)"))
        conn.execute(text("CREATE DATABASE farm_test_empty"))
    try:
        farm_env(database_url=pg_url.rsplit("/", 1)[0] + "/farm_test_empty")
        result = farm("status")
        assert result.code == 3 and "has no farm tables; run `farm db upgrade`" in result.err
    finally:
        db.get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS farm_test_empty WITH (FORCE)"))
