"""The dashboard is closed by default: credentials on every route but the health check, and no listening beyond
this host without them. Checked with a real HTTP client (requests) against the real server."""

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
