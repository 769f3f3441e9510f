"""The monitoring profile (docker/monitoring/): Prometheus' own promtool checks the scrape config and the alert
rules and runs their unit test; the real Prometheus, started by docker/service.sh with compose's command, scrapes
the real bookkeeper through its basic auth; and every metric that the Grafana dashboard and the rules name is
one that the bookkeeper's /metrics serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from bookkeeper_server import Background
from compose_file import SECRETS, free_ports, needs, parsed_config, service_argv

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docker" / "monitoring"
DASHBOARD = MONITORING / "farm-dashboard.json"
RULES = MONITORING / "alerts.yml"
USER, PASSWORD = SECRETS["FARM_DASHBOARD_AUTH"].split(":")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict[str, Any]:
    return parsed_config(tmp_path_factory.mktemp("compose"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([needs("promtool"), *args], capture_output=True, text=True, timeout=120)


# --- PromQL -----------------------------------------------------------------------------------------------

# Words of PromQL that are not metric names where they stand without a "(" after them.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
KEYWORDS |= {"offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names that a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\$\{?\w+\}?", "1", expr)  # Grafana's variables ($__interval)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges and subqueries
    # label lists
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for word in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if word[0].lower() in KEYWORDS or expr[word.end() :].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(word[0])
    return names


def test_metric_names_are_read_from_promql():
    expr = 'histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="b c", le!="1e3"}[5m] offset 1h))) / on() b'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("sum(x) without (y) > bool 1e-3 and on (z) y:recorded[1h:30s]") == {"x", "y:recorded"}


def dashboard_queries() -> dict[str, list[str]]:
    """The PromQL of each panel of the Grafana dashboard, by title."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        queries.setdefault(panel["title"], []).extend(t["expr"] for t in panel["targets"])
    return queries


def rule_queries() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}


# --- promtool ----------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_and_their_unit_test_fires_each_alert():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert set(rule_queries()) == {"FarmStalled", "FarmFailureRateHigh"}
    unit = MONITORING / "alerts.test.yml"
    tested = promtool("test", "rules", str(unit))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    spec = yaml.safe_load(unit.read_text())
    assert spec["rule_files"] == [RULES.name]
    cases = [case for test in spec["tests"] for case in test["alert_rule_test"]]
    for alert in rule_queries():
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in cases), f"no test sees {alert} fire"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in cases), (
            f"no test keeps {alert} quiet"
        )


def mounted(service: dict[str, Any]) -> dict[str, str]:
    """The service's bind mounts of this checkout's files: container path -> path here."""
    pairs = (v.split(":")[:2] for v in service["volumes"])
    return {target: source for source, target in pairs if source.startswith("/")}


def container_files(service: dict[str, Any], folder: Path, **replace: str) -> dict[str, str]:
    """Prometheus' files with the container's paths made this checkout's (what its bind mounts do), and the
    other replacements (compose's service names: what the network's DNS does); container path -> path here."""
    mounts = mounted(service)
    files = {}
    for target, source in mounts.items():
        text = Path(source).read_text()
        for inside, here in {**mounts, **replace}.items():
            text = text.replace(inside, here)
        copy = folder / Path(source).name
        copy.write_text(text)
        files[target] = str(copy)
    return files


def prometheus_argv(service: dict[str, Any], files: dict[str, str], **flags: str) -> list[str]:
    """Compose's entrypoint and command, with these files and flags in place of the container's."""
    argv = []
    for arg in service_argv(service):
        name, _, value = arg.partition("=")
        if name in flags:
            arg = f"{name}={flags[name]}"
        elif value in files:
            arg = f"{name}={files[value]}"
        argv.append(files.get(arg, arg))
    return argv


def test_the_scrape_config_that_service_sh_writes_passes_promtool(config, tmp_path):
    service = config["services"]["prometheus"]
    assert service["profiles"] == ["monitoring"]
    assert service["environment"] == {"FARM_DASHBOARD_AUTH": SECRETS["FARM_DASHBOARD_AUTH"]}
    raw = (MONITORING / "prometheus.yml").read_text()
    assert PASSWORD not in raw and "password:" not in raw  # the password comes from a file made at start

    # service.sh's copy (promtool checks the files that it names: alerts.yml through its mount), with a stand-in `prometheus` that checks it with promtool instead of serving it.
    bin_dir, run = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    run.mkdir()
    (bin_dir / "prometheus").write_text(
        f'#!/bin/sh\nfor a; do case $a in --config.file=*) exec {needs("promtool")} check config "${{a#*=}}";; esac; done\n'
    )
    (bin_dir / "prometheus").chmod(0o755)
    files = container_files(service, tmp_path)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FARM_RUN_DIR": str(run), **service["environment"]}
    result = subprocess.run(
        prometheus_argv(service, files), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr  # alerts.yml, through its mount
    written = yaml.safe_load((run / "prometheus.yml").read_text())
    (scrape,) = written["scrape_configs"]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"] == [{"targets": ["bookkeeper:8080"]}]
    assert scrape["basic_auth"] == {"username": USER, "password_file": str(run / "dashboard-password")}
    assert (run / "dashboard-password").read_text() == PASSWORD
    for made in run.iterdir():
        assert made.stat().st_mode & 0o777 == 0o600, made.name


# --- the real bookkeeper's /metrics ----------------------------------------------------------------------


@pytest.fixture
def bookkeeper(farm, farm_env, tmp_path) -> Iterator[Background]:
    """The real bookkeeper over a small embedded-SQLite farm with clips in every state and live workers, asking
    for compose's FARM_DASHBOARD_AUTH."""
    from sqlalchemy import insert, select, update

    from farm.core.db import session_scope, utcnow
    from farm.core.models import Clip, ClipStatus, WorkerRecord
    from farm.core.settings import get_settings

    farm_env(storage_url=str(tmp_path / "storage"), dashboard_auth=SECRETS["FARM_DASHBOARD_AUTH"])
    assert farm("catalog", "import", "builtin").code == 0
    assert farm("enqueue", "--sequences", "builtin_all", "--limit", "8").code == 0
    now = utcnow()
    with session_scope(get_settings().database_url) as session:
        ids = session.scalars(select(Clip.id).order_by(Clip.id)).all()
        states = [ClipStatus.DONE] * 3 + [ClipStatus.FAILED, ClipStatus.RUNNING]  # the rest stay queued
        for clip_id, state in zip(ids, states, strict=False):
            values: dict[str, Any] = {"status": state, "attempts": 1, "updated_at": now}
            if state == ClipStatus.DONE:
                ago = timedelta(minutes=10)
                values |= {"finished_at": now - ago, "started_at": now - ago - timedelta(seconds=95)}
                values |= {"render_seconds": 95, "frames_done": 100, "worker": "gpu0@a"}
            if state == ClipStatus.FAILED:
                values |= {"error": "CUDA error: out of memory"}
            session.execute(update(Clip).where(Clip.id == clip_id).values(**values))
        session.execute(
            insert(WorkerRecord).values(
                name="gpu0@a", hostname="a", device="optix", started_at=now, last_seen_at=now
            )
        )
    server = Background(get_settings())
    yield server
    server.stop()


def served_metrics(url: str) -> dict[str, set[str]]:
    """The metric families that /metrics serves, each with the names of its samples."""
    from prometheus_client.parser import text_string_to_metric_families

    assert requests.get(f"{url}/metrics", timeout=30).status_code == 401
    response = requests.get(f"{url}/metrics", auth=(USER, PASSWORD), timeout=30)
    assert response.status_code == 200
    families = text_string_to_metric_families(response.text)
    return {f.name: {s.name for s in f.samples} for f in families}


def test_every_metric_of_the_dashboard_and_the_rules_is_served_by_metrics(bookkeeper):
    served = served_metrics(bookkeeper.url)
    names = set(served) | set().union(*served.values())
    panels = dashboard_queries()
    for title in ("Frames per second", "ETA", "Clips per state", "Failures by reason", "Live workers"):
        assert panels.get(title), f"the dashboard has no {title} panel"
    queries = {f"panel {t}": q for t, qs in panels.items() for q in qs}
    queries |= {f"alert {a}": q for a, q in rule_queries().items()}
    for where, query in queries.items():
        used = metric_names(query)
        assert used, f"{where}: {query} names no metric"
        assert used <= names, f"{where} names {sorted(used - names)}, which /metrics does not serve"
        for name in used:  # and the farm above gives each of them a value
            assert any(name in samples for samples in served.values()), f"{where}: {name} has no sample"


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(config):
    service = config["services"]["grafana"]
    assert service["profiles"] == ["monitoring"]
    assert service["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    files = {target: Path(source) for target, source in mounted(service).items()}
    (datasources,) = [p for t, p in files.items() if t.startswith("/etc/grafana/provisioning/datasources/")]
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (providers,) = [p for t, p in files.items() if t.startswith("/etc/grafana/provisioning/dashboards/")]
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    dashboards = [t for t, p in files.items() if p == DASHBOARD]
    assert [os.path.dirname(t) for t in dashboards] == [provider["options"]["path"]]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for where in (panel, *panel["targets"]):
            assert where["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]


# --- the real Prometheus ----------------------------------------------------------------------------------


def query(url: str, promql: str) -> list[dict[str, Any]]:
    with requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=30) as response:
        result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


@pytest.mark.slow
def test_prometheus_scrapes_the_bookkeeper_through_its_basic_auth(config, bookkeeper, tmp_path):
    service = config["services"]["prometheus"]
    needs("prometheus")
    (port,) = free_ports(1)
    target = urllib.parse.urlsplit(bookkeeper.url).netloc
    files = container_files(service, tmp_path, **{"bookkeeper:8080": target})
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    argv = prometheus_argv(
        service, files, **{"--storage.tsdb.path": str(data), "--web.listen-address": f"127.0.0.1:{port}"}
    )
    env = {"PATH": os.environ["PATH"], "FARM_RUN_DIR": str(run), **service["environment"]}
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # the first scrape comes within one scrape interval (30 s)
        while not query_ok(url):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not scrape the bookkeeper"
            time.sleep(1)
        assert query(url, 'farm_clips{state="queued"}')[0]["value"][1] == "3"
        rules = requests.get(f"{url}/api/v1/rules", timeout=30).json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} == set(rule_queries())
        # service.sh exec'd Prometheus, which has the password in neither its command line nor its environment.
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(needs("prometheus")).resolve()
        for what in ("cmdline", "environ"):
            assert PASSWORD not in Path(f"/proc/{proc.pid}/{what}").read_bytes().decode(), what
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def query_ok(url: str) -> bool:
    """Whether Prometheus answers and has scraped the farm's job successfully."""
    try:
        up = query(url, 'up{job="farm"}')
    except (requests.RequestException, ValueError, KeyError):
        return False
    return bool(up) and up[0]["value"][1] == "1"
