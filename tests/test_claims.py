"""The claim protocol on the real PostgreSQL: one holder per clip, completion only by the holder, logged."""

import threading
import time
from datetime import timedelta

import pytest
from conftest import enqueue_builtin
from sqlalchemy import select, update

from farm.db import session_scope
from farm.models import Clip, ClipEvent, WorkerRecord
from worker import claims

pytestmark = pytest.mark.services
LEASE = timedelta(seconds=30)


@pytest.fixture
def db(farm, pg_farm, pg_url):
    """This session's PostgreSQL database holding six queued clips of the built-in catalog."""
    return pg_url, enqueue_builtin(farm, pg_url, 6)


def events(url, clip_id):
    with session_scope(url) as session:
        rows = session.execute(
            select(ClipEvent.from_status, ClipEvent.to_status, ClipEvent.worker)
            .where(ClipEvent.clip_id == clip_id)
            .order_by(ClipEvent.id)
        )
        return [tuple(r) for r in rows]


def test_only_one_of_many_racing_workers_gets_a_clip(db):
    url, ids = db
    results = []

    def attempt(n):
        with session_scope(url) as session:
            results.append(claims.claim(session, ids[0], f"w{n}", LEASE))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leases = [r for r in results if isinstance(r, claims.Lease)]
    assert len(leases) == 1 and all(r == claims.Refusal.TAKEN for r in results if r not in leases)
    assert events(url, ids[0])[-1][1] == "running"


def test_complete_once_and_only_by_the_holder(db):
    url, ids = db
    with session_scope(url) as session:
        lease = claims.claim(session, ids[0], "w1", LEASE)
    stranger = claims.Lease(ids[0], "not-the-token", lease.spec, 1)
    with session_scope(url) as session:
        assert not claims.complete(session, stranger, "w2", "x", 1, {}, 1.0)
        assert claims.complete(session, lease, "w1", "out/x", 100, {"k": {"sha256": "ab", "size": 1}}, 2.5)
    with session_scope(url) as session:
        # The same lease again (a retry after a lost reply) is recognised as done, and changes nothing.
        assert claims.complete(session, lease, "w1", "out/y", 7, {}, 2.5)
        assert claims.claim(session, ids[0], "w3", LEASE) == claims.Refusal.OVER  # a late duplicate delivery
        clip = session.get(Clip, ids[0])
        assert (clip.status, clip.frames_done, clip.output_uri, clip.attempts) == ("done", 100, "out/x", 1)
        assert clip.checksums == {"k": {"sha256": "ab", "size": 1}}
    assert [e[1] for e in events(url, ids[0])] == ["queued", "running", "done"]


def test_failures_requeue_then_fail_and_exclude_the_worker(db):
    url, ids = db
    for attempt in (1, 2):
        with session_scope(url) as session:
            lease = claims.claim(session, ids[1], "w1", LEASE)
            assert isinstance(lease, claims.Lease) and lease.attempt == attempt
            assert claims.fail(session, lease, "w1", "RenderError: boom", max_attempts=3) == "queued"
    with session_scope(url) as session:
        claims.heartbeat(session, "w2", "cpu")  # a live worker that may still take it
        assert claims.claim(session, ids[1], "w1", LEASE) == claims.Refusal.EXCLUDED  # failed it twice, w2 may
        lease = claims.claim(session, ids[1], "w2", LEASE)
        assert claims.fail(session, lease, "w2", "RenderError: boom again", max_attempts=3) == "failed"
    with session_scope(url) as session:
        clip = session.get(Clip, ids[1])
        assert (clip.status, clip.error, clip.attempts) == ("failed", "RenderError: boom again", 3)
        assert claims.retry_failed(session) == [ids[1]]
    with session_scope(url) as session:
        assert (session.get(Clip, ids[1]).status, session.get(Clip, ids[1]).attempts) == ("queued", 0)


def test_expired_leases_are_taken_back_and_the_old_holder_cannot_complete(db):
    url, ids = db
    with session_scope(url) as session:
        lease = claims.claim(session, ids[2], "dead", timedelta(seconds=1))
        assert claims.claim(session, ids[2], "w2", LEASE) == claims.Refusal.TAKEN
    time.sleep(1.2)
    with session_scope(url) as session:
        assert claims.take_back_expired(session, max_attempts=3) == {ids[2]: 1}
        assert not claims.renew(session, lease, LEASE)
        assert not claims.complete(session, lease, "dead", "x", 1, {}, 1.0)
        assert isinstance(claims.claim(session, ids[2], "w2", LEASE), claims.Lease)
    assert events(url, ids[2])[2] == ("running", "queued", claims.RECONCILER)
    # An expired lease can also be claimed directly by a redelivered message.
    with session_scope(url) as session:
        session.execute(
            update(Clip)
            .where(Clip.id == ids[3])
            .values(status="running", lease_token="old", lease_expires_at=claims.utcnow() - LEASE)
        )
        assert isinstance(claims.claim(session, ids[3], "w4", LEASE), claims.Lease)


def test_a_clip_that_keeps_losing_its_worker_ends_failed(db):
    url, ids = db
    for _ in range(3):
        with session_scope(url) as session:
            claims.claim(session, ids[4], "doomed", timedelta(seconds=0))
        time.sleep(0.05)
        with session_scope(url) as session:
            claims.take_back_expired(session, max_attempts=3)
    with session_scope(url) as session:
        clip = session.get(Clip, ids[4])
        assert clip.status == "failed" and "stopped renewing its lease" in clip.error


def test_pause_stops_claims_and_resume_restores_them(db):
    url, ids = db
    with session_scope(url) as session:
        claims.set_paused(session, True)
    with session_scope(url) as session:
        assert claims.claim(session, ids[5], "w1", LEASE) == claims.Refusal.PAUSED
        claims.set_paused(session, False)
    with session_scope(url) as session:
        assert isinstance(claims.claim(session, ids[5], "w1", LEASE), claims.Lease)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, farm, farm_env, tmp_path):
    """Two queued clips of the built-in catalog, on the embedded SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'farm.db'}"
        farm_env(database_url=url)
        assert farm("db", "upgrade").code == 0
    else:
        request.getfixturevalue("pg_farm")
        url = request.getfixturevalue("pg_url")
    return url, enqueue_builtin(farm, url, 2)


def fail_twice(url, clip_id, worker, max_attempts=5):
    for _ in range(claims.FAILS_PER_HOST):
        with session_scope(url) as session:
            claims.heartbeat(session, worker, "cpu")
            lease = claims.claim(session, clip_id, worker, LEASE)
            assert isinstance(lease, claims.Lease)
            assert (
                claims.fail(session, lease, worker, f"RenderError: {worker} failed", max_attempts) == "queued"
            )


def test_a_clip_no_live_worker_may_take_ends_failed_with_its_reason(any_db):
    url, ids = any_db
    # The only host failed it twice and no other may take it: it tries again, until FARM_MAX_ATTEMPTS.
    fail_twice(url, ids[0], "w1", max_attempts=3)
    with session_scope(url) as session:
        lease = claims.claim(session, ids[0], "w1", LEASE)
        assert isinstance(lease, claims.Lease) and lease.attempt == 3
        assert claims.fail(session, lease, "w1", "RenderError: w1 failed again", max_attempts=3) == "failed"
    with session_scope(url) as session:
        clip = session.get(Clip, ids[0])
        assert (clip.status, clip.attempts, clip.error) == ("failed", 3, "RenderError: w1 failed again")
        assert claims.claim(session, ids[0], "w1", LEASE) == claims.Refusal.OVER
    assert events(url, ids[0])[-1] == ("running", "failed", "w1")

    # Another live host that has not failed it may still take it: the clip stays queued for it ...
    fail_twice(url, ids[1], "w1")
    with session_scope(url) as session:
        claims.heartbeat(session, "w2", "cpu")
        assert claims.claim(session, ids[1], "w1", LEASE) == claims.Refusal.EXCLUDED
        assert session.get(Clip, ids[1]).status == "queued"
    # ... until it too failed it twice,
    fail_twice(url, ids[1], "w2")
    with session_scope(url) as session:
        claims.heartbeat(session, "w2", "cpu")
        claims.heartbeat(session, "w3", "cpu")
        session.execute(  # or until the one that could take it is silent for longer than a lease
            update(WorkerRecord)
            .where(WorkerRecord.name == "w3")
            .values(last_seen_at=claims.utcnow() - 2 * LEASE)
        )
    with session_scope(url) as session:
        assert claims.claim(session, ids[1], "w2", LEASE) == claims.Refusal.NO_TAKER
        clip = session.get(Clip, ids[1])
        assert (clip.status, clip.attempts) == ("failed", 4)
        assert clip.error == f"RenderError: w2 failed; {claims.NO_TAKER_NOTE}"
    assert events(url, ids[1])[-1] == ("queued", "failed", "w2")
