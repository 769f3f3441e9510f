"""The claim protocol on the real PostgreSQL: one holder per clip, completion only by the holder, logged."""

import threading
import time
from datetime import timedelta

import pytest
from conftest import builtin_clips_on, enqueue_builtin
from sqlalchemy import Float, select, update

from farm.core.db import session_scope
from farm.core.models import Clip, ClipEvent, WorkerRecord
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
        assert (
            claims.claim(session, ids[1], "w1", LEASE) == claims.Refusal.EXCLUDED
        )  # failed it twice, w2 may
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
    return builtin_clips_on(request.param, request, farm, farm_env, tmp_path, 2)


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


def now_plus(url, seconds):
    """The database's time plus `seconds`, read from the database."""
    from sqlalchemy import bindparam

    from farm.core.db import db_now

    with session_scope(url) as session:
        return session.scalar(select(db_now(bindparam("s", type_=Float))), {"s": seconds})


def lease_within(url, clip_id, low, high):
    """Whether the clip's lease ends between `low` and `high` seconds from now in the database's time."""
    from sqlalchemy import bindparam

    from farm.core.db import db_now

    with session_scope(url) as session:
        expires = Clip.lease_expires_at
        return session.scalar(
            select(
                (expires > db_now(bindparam("low", type_=Float)))
                & (expires < db_now(bindparam("high", type_=Float)))
            ).where(Clip.id == clip_id),
            {"low": low, "high": high},
        )


AHEAD, BEHIND, RIGHT = timedelta(minutes=5), -timedelta(minutes=5), timedelta(0)


@pytest.mark.parametrize(
    ("holder", "others"), [(RIGHT, AHEAD), (BEHIND, RIGHT), (AHEAD, BEHIND)], ids=["others-ahead", "holder-behind", "both-off"]
)  # fmt: skip
def test_leases_run_on_the_database_clock_whatever_the_hosts_clock(any_db, monkeypatch, holder, others):
    """Hosts whose clocks are minutes off (the host-time helper patched for each) change nothing: a live
    lease stays its holder's against the other workers and the reconciler, an expired one is taken, and leases
    and heartbeats are in the database's time."""
    import farm.core.db

    url, ids = any_db
    real = farm.core.db.utcnow

    def clock(skew):
        monkeypatch.setattr(farm.core.db, "utcnow", lambda: real() + skew)
        monkeypatch.setattr(claims, "utcnow", lambda: real() + skew)

    clock(holder)
    with session_scope(url) as session:
        lease = claims.claim(session, ids[0], "w1", LEASE)
        claims.heartbeat(session, "w1", "cpu")
        seen = session.get(WorkerRecord, "w1").last_seen_at
    assert isinstance(lease, claims.Lease) and lease_within(url, ids[0], 20, 40)
    assert (
        now_plus(url, -30).replace(tzinfo=None)
        < seen.replace(tzinfo=None)
        < now_plus(url, 1).replace(tzinfo=None)
    )
    clock(others)
    with session_scope(url) as session:
        assert claims.claim(session, ids[0], "w2", LEASE) == claims.Refusal.TAKEN
        assert claims.take_back_expired(session, max_attempts=3) == {}
    clock(holder)
    with session_scope(url) as session:
        assert claims.renew(session, lease, 2 * LEASE)
    assert lease_within(url, ids[0], 50, 70)
    clock(others)
    with session_scope(url) as session:
        assert claims.claim(session, ids[0], "w2", LEASE) == claims.Refusal.TAKEN
    clock(holder)
    with session_scope(url) as session:
        assert claims.complete(session, lease, "w1", "out/x", 1, {}, 1.0)
    assert [e[1] for e in events(url, ids[0])] == ["queued", "running", "done"]
    # A lease that expired in the database's time is taken, whatever the taker's clock says.
    with session_scope(url) as session:
        claims.claim(session, ids[1], "dead", timedelta(seconds=0))
    time.sleep(0.01)
    clock(others)
    with session_scope(url) as session:
        taken = claims.claim(session, ids[1], "w2", LEASE)
        assert isinstance(taken, claims.Lease) and taken.attempt == 2


def test_take_back_rechecks_expiry_in_its_update(any_db):
    """A renewal that comes after the lease expired but before the reconciler's update keeps the clip."""
    url, ids = any_db
    with session_scope(url) as session:
        lease = claims.claim(session, ids[0], "slow", timedelta(seconds=0))
    time.sleep(0.01)
    with session_scope(url) as session:
        assert claims.renew(session, lease, LEASE)  # late, but before anyone took it
        assert claims.take_back_expired(session, max_attempts=3) == {}
    with session_scope(url) as session:
        clip = session.get(Clip, ids[0])
        assert (clip.status, clip.lease_token) == ("running", lease.token)


def test_take_back_waits_for_a_concurrent_renewal_and_keeps_the_clip(db):
    """PostgreSQL: the take-back's UPDATE waits for a renewal that holds the row and then re-checks expiry on
    the renewed row, so the renewal is not lost (selecting first and then giving back lost it)."""
    from sqlalchemy import create_engine, text

    url, ids = db
    with session_scope(url) as session:
        lease = claims.claim(session, ids[0], "slow", timedelta(seconds=0))
    time.sleep(0.01)
    engine = create_engine(url)
    result = {}

    def reconciler():
        with session_scope(url) as session:
            result["taken"] = claims.take_back_expired(session, max_attempts=3)

    try:
        with engine.connect() as worker, engine.connect() as watcher:
            renewal = worker.begin()
            assert claims.renew(worker, lease, LEASE)  # holds the row until it commits
            thread = threading.Thread(target=reconciler)
            thread.start()
            from farm_cluster import wait_for

            wait_for(
                lambda: watcher.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar(),
                30,
                "the take-back to wait for the renewal's row lock",
            )
            renewal.commit()
            thread.join(30)
    finally:
        engine.dispose()
    assert result["taken"] == {}
    with session_scope(url) as session:
        assert session.get(Clip, ids[0]).status == "running"


def test_exclusion_is_per_host_and_counts_deaths_while_holding(any_db):
    url, ids = any_db
    with session_scope(url) as session:
        claims.heartbeat(session, "other:7", "cpu")  # a live host that may take the clips
    # Host h fails a clip in pool process 1 and again in process 2 (a recycled one): h may not take it again.
    for pid in (1, 2):
        with session_scope(url) as session:
            lease = claims.claim(session, ids[0], f"h:{pid}", LEASE)
            assert claims.fail(session, lease, f"h:{pid}", "RenderError: boom", max_attempts=5) == "queued"
    with session_scope(url) as session:
        assert claims.claim(session, ids[0], "h:3", LEASE) == claims.Refusal.EXCLUDED
        assert isinstance(claims.claim(session, ids[0], "other:7", LEASE), claims.Lease)
    # Host h dies holding the other clip twice (the reconciler takes it back): that counts the same.
    for _ in range(2):
        with session_scope(url) as session:
            claims.claim(session, ids[1], "h:1", timedelta(seconds=0))
        time.sleep(0.01)
        with session_scope(url) as session:
            assert list(claims.take_back_expired(session, max_attempts=5)) == [ids[1]]
    assert [e[1:] for e in events(url, ids[1])][-2:] == [("running", "h:1"), ("queued", claims.RECONCILER)]
    with session_scope(url) as session:
        claims.heartbeat(session, "other:7", "cpu")
        assert claims.claim(session, ids[1], "h:4", LEASE) == claims.Refusal.EXCLUDED
        assert session.get(Clip, ids[1]).status == "queued"


def test_a_statement_run_twice_with_one_lease_token_means_the_same(any_db):
    """What a retry after a lost reply runs: the claim returns the lease it took, the completion and the
    failure recognise their own work; nothing is counted twice."""
    url, ids = any_db
    token = "a" * 32
    with session_scope(url) as session:
        first = claims.claim(session, ids[0], "w:1", LEASE, token)
    with session_scope(url) as session:
        again = claims.claim(session, ids[0], "w:1", LEASE, token)
        assert isinstance(first, claims.Lease) and again == first and again.attempt == 1
        assert claims.claim(session, ids[0], "w:2", LEASE, "b" * 32) == claims.Refusal.TAKEN
    for _ in range(2):
        with session_scope(url) as session:
            assert claims.complete(session, first, "w:1", "out/x", 10, {}, 1.0)
    with session_scope(url) as session:
        lease = claims.claim(session, ids[1], "w:1", LEASE)
    for _ in range(2):
        with session_scope(url) as session:
            assert claims.fail(session, lease, "w:1", "RenderError: boom", max_attempts=3) == "queued"
    with session_scope(url) as session:
        assert session.get(Clip, ids[1]).attempts == 1
    assert [e[1] for e in events(url, ids[0])] == ["queued", "running", "done"]
    assert [e[1] for e in events(url, ids[1])] == ["queued", "running", "queued"]


def test_a_dropped_connection_is_retried_once_and_other_errors_are_not(db):
    """PostgreSQL: the server drops the worker's pooled connection (as in a restart); the claim is run once
    more on a new connection and takes the clip with one attempt. An error that is not a dropped connection
    is raised at once."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    url, ids = db
    backend = claims.once_more(url, lambda conn: conn.execute(text("SELECT pg_backend_pid()")).scalar(), 5)
    admin = create_engine(url)
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar()
    finally:
        admin.dispose()
    runs = []

    def take(conn):
        runs.append(1)
        return claims.claim(conn, ids[0], "w:1", LEASE, "c" * 32)

    lease = claims.once_more(url, take, 5)
    assert isinstance(lease, claims.Lease) and lease.attempt == 1 and len(runs) == 2
    runs.clear()

    def broken(conn):
        runs.append(1)
        conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(ProgrammingError):
        claims.once_more(url, broken, 5)
    assert len(runs) == 1
