"""`farm reconcile`, `pause`, `resume` and `retry` against the real PostgreSQL and Redis."""

from datetime import timedelta

import pytest
from conftest import enqueue_builtin
from sqlalchemy import update

from farm.core.celery_app import celery_for, clips_in_broker
from farm.core.db import session_scope
from farm.core.models import Clip
from farm.core.settings import get_settings
from worker import claims

pytestmark = pytest.mark.services


@pytest.fixture
def farm_with_clips(farm, pg_farm, pg_url, redis_client, render_queue):
    return pg_url, enqueue_builtin(farm, pg_url, 10), redis_client, render_queue


def in_broker():
    return sorted(clips_in_broker(celery_for(get_settings())))


def test_reconcile_restores_messages_redis_lost(farm, farm_with_clips):
    url, ids, redis, queue = farm_with_clips
    assert in_broker() == ids
    redis.delete(queue)  # the broker loses its data
    assert in_broker() == []
    assert farm("reconcile").code == 0
    assert in_broker() == ids
    assert farm("reconcile").code == 0  # nothing missing: nothing sent twice
    assert in_broker() == ids


def test_reconcile_takes_back_clips_of_dead_workers(farm, farm_with_clips):
    url, ids, redis, queue = farm_with_clips
    with session_scope(url) as session:
        claims.claim(session, ids[0], "dead-worker", timedelta(seconds=30))
        session.execute(
            update(Clip)
            .where(Clip.id == ids[0])
            .values(lease_expires_at=claims.utcnow() - timedelta(seconds=1))
        )
    result = farm("reconcile")
    assert result.code == 0 and "1 clip taken back" in result.out
    with session_scope(url) as session:
        assert session.get(Clip, ids[0]).status == "queued"
    assert in_broker().count(ids[0]) == 2  # its old message stays; the new one is what guarantees a retry


def test_pause_resume_and_retry(farm, farm_with_clips):
    url, ids, redis, queue = farm_with_clips
    assert farm("pause").code == 0
    redis.delete(queue)  # workers dropped the messages while paused
    farm("reconcile")
    assert in_broker() == []  # nothing is sent while paused
    assert farm("resume").code == 0
    assert in_broker() == ids

    with session_scope(url) as session:
        session.execute(
            update(Clip)
            .where(Clip.id.in_(ids[:3]))
            .values(status="failed", error="Blender crashed", attempts=3)
        )
    redis.delete(queue)
    assert farm("retry").code == 2
    result = farm("retry", "--failed")
    assert result.code == 0 and "3 failed clips queued again" in result.out
    assert in_broker() == ids[:3]
    with session_scope(url) as session:
        assert {session.get(Clip, i).status for i in ids[:3]} == {"queued"}
