"""The dashboard is closed by default: credentials on every route but the health check, no listening beyond
this host without them, and every value from outside shown as text. Checked with a real HTTP client (requests)
against the real server, and with an HTML parser."""

from __future__ import annotations

import requests
from bookkeeper_server import Background

from farm.core.settings import get_settings

ROUTES = ("/", "/api/progress", "/api/clips", "/api/failures", "/api/workers", "/api/throughput", "/metrics")


def test_every_route_but_the_health_check_asks_for_credentials(farm, farm_env, tmp_path):
    farm_env(storage_url=str(tmp_path / "storage"), dashboard_auth="viewer:pa55-word")
    assert farm("catalog", "import", "builtin").code == 0
    server = Background(get_settings())
    try:
        health = requests.get(f"{server.url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"ok": True}
        for route in (*ROUTES, "/thumb/1.jpg"):
            anonymous = requests.get(server.url + route, timeout=30)
            assert anonymous.status_code == 401, route
            assert anonymous.headers["WWW-Authenticate"].startswith("Basic"), route
            wrong = requests.get(server.url + route, auth=("viewer", "guess"), timeout=30)
            assert wrong.status_code == 401, route
        for route in ROUTES:
            assert (
                requests.get(server.url + route, auth=("viewer", "pa55-word"), timeout=30).status_code == 200
            )
        thumb = requests.get(f"{server.url}/thumb/1.jpg", auth=("viewer", "pa55-word"), timeout=30)
        assert thumb.status_code == 404  # past the credentials: there is no such clip yet
    finally:
        server.stop()


def test_listening_beyond_this_host_without_credentials_is_refused(farm, farm_env):
    run = farm("bookkeeper", "--host", "0.0.0.0", "--port", "1")
    assert run.code != 0
    assert "without credentials: set FARM_DASHBOARD_AUTH=user:password" in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1


def test_bad_credentials_setting_is_one_sentence_without_the_secret(farm, farm_env):
    farm_env(dashboard_auth="only-a-password-no-user")
    run = farm("bookkeeper")
    assert run.code != 0
    assert "FARM_DASHBOARD_AUTH is not valid (it must be user:password" in run.err
    assert "only-a-password-no-user" not in run.err and "Traceback" not in run.err


HOSTILE = '<script>alert("x")</script>&'


def test_every_field_from_the_database_is_escaped_on_the_page(farm, farm_env, tmp_path):
    """Failure reasons, worker names, pause reasons and clip names come from outside (exception texts, host
    names); the page shows them as text, parsed back by an HTML parser."""
    from html.parser import HTMLParser

    from sqlalchemy import select, update

    from farm.core.db import session_scope, utcnow
    from farm.core.models import Clip, ClipStatus, WorkerRecord
    from farm.dashboard.app import render_dashboard
    from farm.dashboard.queries import dashboard_data

    farm_env(storage_url=str(tmp_path / "storage"))
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "2").code == 0
    url = get_settings().database_url
    now = utcnow()
    with session_scope(url) as session:
        first = session.scalars(select(Clip.id).order_by(Clip.id)).first()
        session.execute(
            update(Clip)
            .where(Clip.id == first)
            .values(status=ClipStatus.FAILED, error=HOSTILE, worker=HOSTILE)
        )
        session.add(
            WorkerRecord(
                name=HOSTILE, hostname=HOSTILE, device="cpu", started_at=now, last_seen_at=now,
                paused_until=now.replace(year=now.year + 1), pause_reason=HOSTILE,
            )
        )  # fmt: skip
    with session_scope(url) as session:
        page = render_dashboard(dashboard_data(session, 1000, utcnow()))

    class Texts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.tags.append(tag)

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parsed = Texts()
    parsed.feed(page)
    assert "script" not in parsed.tags
    assert sum(HOSTILE in t for t in parsed.text) >= 3  # the reason, the worker and its pause, as text
