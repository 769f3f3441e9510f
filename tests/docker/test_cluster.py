"""`docker compose up`, for real: the README's cluster commands on a Docker engine of the test's own, with the
images built from docker/ on stand-in base images (docker/standins/), then the faults a cluster meets.

The cluster publishes its ports on this machine's own address (not 127.0.0.1, where this machine's PostgreSQL
and Redis listen), as the README's central host does for worker hosts; a second compose project on the same
engine joins it over those ports as a host that only renders.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from compose_file import ROOT, free_ports, outside_address
from conftest import service_missing
from engine import Engine, data_root, torch_mirror
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

T = TypeVar("T")
LEASE_SECONDS = 15
TIMINGS: dict[str, float] = {}  # printed at the end of the module (the numbers)


def wait_for(check: Callable[[], T | None], seconds: float, what: str, every: float = 1.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:.0f} s for {what}")
        time.sleep(every)


class Cluster:
    """One compose project of docker-compose.yml, run with the README's commands from the checkout."""

    def __init__(self, engine: Engine, project: str, env_file: Path) -> None:
        self.engine, self.project, self.env_file = engine, project, env_file
        self.settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> Any:
        env = {
            **self.engine.env,
            "COMPOSE_ENV_FILES": str(self.env_file),
            "COMPOSE_PROJECT_NAME": self.project,
        }
        result = subprocess.run(
            ["docker", "compose", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}\n"
                + self.logs()
            )
        return result

    def farm(self, *args: str, check: bool = True) -> Any:
        """A farm command in a container of the app image, as the README runs them."""
        return self.compose("run", "--rm", "--no-deps", "bookkeeper", *args, check=check)

    def logs(self) -> str:
        env = {
            **self.engine.env,
            "COMPOSE_ENV_FILES": str(self.env_file),
            "COMPOSE_PROJECT_NAME": self.project,
        }
        result = subprocess.run(
            ["docker", "compose", "--profile", "cpu", "logs", "--no-color", "--tail", "30"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return result.stdout[-6000:]

    def url(self, service: str) -> str:
        ports = {"bookkeeper": "BOOKKEEPER_PORT", "flower": "FLOWER_PORT", "prometheus": "PROMETHEUS_PORT"}
        return f"http://{self.settings['FARM_PUBLISH_ADDR']}:{self.settings[ports[service]]}"

    def database(self) -> Any:
        s = self.settings
        return create_engine(
            f"postgresql+psycopg://farm:{s['POSTGRES_PASSWORD']}@{s['FARM_PUBLISH_ADDR']}:5432/farm",
            pool_pre_ping=True,
        )

    def clips(self) -> list[dict[str, Any]]:
        with self.database().connect() as conn:
            rows = conn.execute(
                text("SELECT id, name, status, attempts, worker, checksums FROM clips ORDER BY id")
            )
            return [dict(r._mapping) for r in rows]

    def events(self, to_status: str) -> dict[int, int]:
        with self.database().connect() as conn:
            rows = conn.execute(
                text("SELECT clip_id, count(*) FROM clip_events WHERE to_status = :s GROUP BY clip_id"),
                {"s": to_status},
            )
            return dict(rows.all())  # type: ignore[arg-type]

    def enqueue(self, count: int, runs: str = "0") -> int:
        """Add `count` clips not yet planned: --limit cuts the plan from its start, which earlier calls took
        in part, so the limit grows by what is still missing until that many were new."""
        new = limit = 0
        while new < count:
            limit += count - new
            assert limit < 1000, f"the built-in motions have fewer than {count} more clips in runs {runs}"
            result = self.farm(
                "enqueue", "--sequences", "builtin_all", "--runs", runs, "--limit", str(limit), "--json"
            )
            new += int(json.loads(result.stdout)["new_clips"])
        return new

    def all_done(self, seconds: float = 600) -> list[dict[str, Any]]:
        rows = wait_for(
            lambda: (r := self.clips()) and all(c["status"] in ("done", "failed") for c in r) and r,
            seconds, "every clip to finish", every=2,
        )  # fmt: skip
        assert {r["status"] for r in rows} == {"done"}, (rows, self.logs())
        return rows

    def assert_done_once_and_verified(self) -> list[dict[str, Any]]:
        rows = self.all_done()
        done = self.events("done")
        assert sorted(done) == [r["id"] for r in rows] and set(done.values()) == {1}, done
        verify = self.farm("verify", "--json", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        report = json.loads(verify.stdout)
        assert report["missing"] == [] and report["corrupt"] == [], report
        return rows


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def cluster_env(folder: Path, address: str, mirror: str) -> Path:
    """cluster.env as the README makes it: cluster.env.example with every secret filled in (generated here),
    published on `address`, and the test's own settings: CPU workers, short leases, a quick reconciler."""
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "REDIS_PASSWORD": secrets.token_hex(12),
        "S3_ACCESS_KEY": secrets.token_hex(8),
        "S3_SECRET_KEY": secrets.token_hex(16),
        "FARM_DASHBOARD_AUTH": f"admin:{secrets.token_hex(8)}",
        "FLOWER_BASIC_AUTH": f"admin:{secrets.token_hex(8)}",
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(8),
        "FARM_PUBLISH_ADDR": address,
        "FARM_DASHBOARD_ADDR": address,
        "FARM_PROMETHEUS_ADDR": address,
        "FARM_DEVICE": "cpu",
    }
    for name, port in zip(("BOOKKEEPER_PORT", "FLOWER_PORT", "PROMETHEUS_PORT"), free_ports(3), strict=True):
        values[name] = str(port)
    values |= {
        "TORCH_INDEX_URL": mirror,  # this machine cannot reach the PyTorch index
        "FARM_LEASE_SECONDS": str(LEASE_SECONDS),
        "FARM_RECONCILE_EVERY_S": "5",
        "FARM_RETRY_DELAY_S": "1",
        "CLUSTER_ENV": str(folder / "cluster.env"),
    }
    lines = []
    for line in (ROOT / "cluster.env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values.pop(name)}" if "=" in line and name in values else line)
    lines += [f"{k}={v}" for k, v in values.items()]  # the settings that the example leaves out
    path = folder / "cluster.env"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine()
    try:
        engine.start()
    except Exception as exc:
        service_missing("a Docker engine of the test's own", exc)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def cluster(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    address = outside_address()
    if address.startswith("127."):  # containers reach the host's published ports only on a real address
        service_missing("an address of this machine other than 127.0.0.1", RuntimeError("none found"))
    started = time.monotonic()
    engine.build_standins()
    TIMINGS["stand-in base images (s)"] = time.monotonic() - started
    with torch_mirror(engine.bridge_gateway(), data_root().parent / "torch-mirror") as mirror:
        cluster = Cluster(engine, "farmtest", cluster_env(folder, str(address), mirror))
        cluster.compose("--profile", "cpu", "down", "--volumes", "--remove-orphans", timeout=300)
        started = time.monotonic()
        cluster.compose("--profile", "cpu", "build", timeout=1800)
        TIMINGS["docker compose build (s)"] = time.monotonic() - started
    for image in ("surreal-farm-app", "surreal-farm-worker", "surreal-farm-seaweedfs"):
        TIMINGS[f"{image} image (MB)"] = engine.image_size_mb(f"{image}:0.1.0")
    started = time.monotonic()
    cluster.compose("--profile", "cpu", "up", "-d", "--wait")
    TIMINGS["up --wait (s)"] = time.monotonic() - started
    cluster.up_at = started  # type: ignore[attr-defined]
    yield cluster
    for project in ("farmtest-host2", "farmtest"):
        Cluster(engine, project, cluster.env_file).compose(
            "--profile", "cpu", "--profile", "monitoring", "down", "--volumes", "--remove-orphans",
            check=False, timeout=300,
        )  # fmt: skip
    print("\ncluster test:", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def test_clips_enqueued_in_containers_are_rendered_stored_and_verified(cluster: Cluster) -> None:
    imported = cluster.farm("catalog", "import", "builtin")
    assert "catalog 'builtin'" in imported.stdout + imported.stderr
    assert cluster.enqueue(3) == 3
    rows = cluster.assert_done_once_and_verified()
    TIMINGS["up to 3 clips done (s)"] = time.monotonic() - cluster.up_at  # type: ignore[attr-defined]
    # Every recorded file is in SeaweedFS, read back over S3 with the farm's key pair.
    import boto3

    s = cluster.settings
    s3 = boto3.client(
        "s3", endpoint_url=f"http://{s['FARM_PUBLISH_ADDR']}:8333", region_name="us-east-1",
        aws_access_key_id=s["S3_ACCESS_KEY"], aws_secret_access_key=s["S3_SECRET_KEY"],
    )  # fmt: skip
    for row in rows:
        for key, info in row["checksums"].items():
            body = s3.get_object(Bucket="surreal", Key=key)["Body"].read()
            assert (len(body), hashlib.sha256(body).hexdigest()) == (info["size"], info["sha256"]), key
    assert {r["worker"] for r in rows} and all(r["attempts"] == 1 for r in rows)


def test_flower_lists_the_worker_and_its_tasks_behind_its_login(cluster: Cluster) -> None:
    auth = cluster.settings["FLOWER_BASIC_AUTH"]
    assert get(f"{cluster.url('flower')}/api/workers")[0] == 401
    workers = wait_for(
        lambda: json.loads(get(f"{cluster.url('flower')}/api/workers?refresh=1", auth)[1] or b"{}"),
        60, "Flower to list the worker",
    )  # fmt: skip
    assert any(name.startswith("farm-cpu") for name in workers), workers
    status, body = get(f"{cluster.url('flower')}/api/tasks?state=SUCCESS", auth)
    assert status == 200
    tasks = json.loads(body)
    assert len(tasks) >= 3 and {t["name"] for t in tasks.values()} == {"worker.tasks.render_clip"}


def test_the_bookkeeper_asks_for_its_login_and_counts_the_frames(cluster: Cluster) -> None:
    progress = f"{cluster.url('bookkeeper')}/api/progress"
    assert get(progress)[0] == 401
    assert get(progress, "admin:wrong")[0] == 401
    status, body = get(progress, cluster.settings["FARM_DASHBOARD_AUTH"])
    assert status == 200
    done_frames = sum(100 for r in cluster.clips() if r["status"] == "done")
    assert json.loads(body)["frames_done"] == done_frames


def test_celery_inspect_ping_in_a_container_is_answered_by_the_worker(cluster: Cluster) -> None:
    result = cluster.farm("celery", "-A", "farm.celery_app", "inspect", "ping", "--timeout", "10")
    assert "pong" in result.stdout and "farm-cpu" in result.stdout, result.stdout


def test_prometheus_scrapes_the_bookkeeper_and_loads_the_alerts(cluster: Cluster) -> None:
    # Grafana has no stand-in (it is not in Debian), so the monitoring profile starts Prometheus alone here.
    cluster.compose("--profile", "monitoring", "up", "-d", "--wait", "prometheus")
    api = f"{cluster.url('prometheus')}/api/v1"

    def bookkeeper_up() -> list[dict[str, Any]]:
        targets = json.loads(get(f"{api}/targets")[1])["data"]["activeTargets"]
        return [t for t in targets if t["health"] == "up" and "bookkeeper" in t["scrapeUrl"]]

    wait_for(bookkeeper_up, 120, "Prometheus to scrape the bookkeeper", every=3)
    groups = json.loads(get(f"{api}/rules")[1])["data"]["groups"]
    assert {"FarmStalled", "FarmFailureRateHigh"} <= {rule["name"] for g in groups for rule in g["rules"]}
    cluster.compose("--profile", "monitoring", "stop", "prometheus")


def test_a_worker_container_killed_mid_clip_leaves_the_clip_done_once(cluster: Cluster) -> None:
    before = {r["id"] for r in cluster.clips()}
    assert cluster.enqueue(1, runs="1") == 1
    (clip,) = wait_for(
        lambda: [r for r in cluster.clips() if r["status"] == "running" and r["id"] not in before],
        300, "the clip to start", every=0.5,
    )  # fmt: skip
    time.sleep(1)
    cluster.engine.docker("kill", f"{cluster.project}-worker-cpu-1")
    cluster.compose("--profile", "cpu", "up", "-d", "--wait", "worker-cpu")  # back, as a user brings it
    rows = cluster.assert_done_once_and_verified()
    (after,) = [r for r in rows if r["id"] == clip["id"]]
    assert after["attempts"] == 2 and cluster.events("running")[clip["id"]] == 2


def test_postgres_restarted_while_a_clip_renders_loses_no_attempt(cluster: Cluster) -> None:
    before = {r["id"] for r in cluster.clips()}
    assert cluster.enqueue(1, runs="2") == 1
    wait_for(
        lambda: [r for r in cluster.clips() if r["status"] == "running" and r["id"] not in before],
        300, "the clip to start", every=0.5,
    )  # fmt: skip
    cluster.compose("restart", "postgres")
    cluster.compose("up", "-d", "--wait", "postgres")  # healthy again before the test itself reads it
    rows = cluster.assert_done_once_and_verified()
    assert all(r["attempts"] == 1 for r in rows if r["id"] not in before), rows


def test_down_then_up_keeps_the_done_clips_their_files_and_the_queue(cluster: Cluster) -> None:
    cluster.compose("--profile", "cpu", "stop", "worker-cpu")
    done = [r for r in cluster.clips() if r["status"] == "done"]
    assert cluster.enqueue(2, runs="0,1,2") == 2  # queued while no worker runs
    cluster.compose("--profile", "cpu", "down")
    cluster.compose("up", "-d", "--wait")  # the central services only: no worker yet
    queued = cluster.compose("exec", "-T", "redis", "redis-cli", "llen", "render")
    assert int(queued.stdout.split()[-1]) == 2, queued.stdout
    assert [r for r in cluster.clips() if r["status"] == "done"] == done
    cluster.compose("--profile", "cpu", "up", "-d", "--wait")
    rows = cluster.assert_done_once_and_verified()
    assert len(rows) == len(done) + 2


def test_a_second_host_that_only_renders_joins_over_the_published_ports(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The README's worker host: the central cluster.env with the central host's address as DB_HOST, REDIS_HOST
    # and S3_HOST, and only workers started.
    address = cluster.settings["FARM_PUBLISH_ADDR"]
    env = tmp_path / "cluster.env"
    text_ = cluster.env_file.read_text()
    for name in ("DB_HOST", "REDIS_HOST", "S3_HOST"):
        text_ = "\n".join(
            f"{name}={address}" if line.startswith(f"{name}=") else line for line in text_.splitlines()
        )
    env.write_text(text_.replace(f"CLUSTER_ENV={cluster.env_file}", f"CLUSTER_ENV={env}") + "\n")
    host2 = Cluster(cluster.engine, "farmtest-host2", env)
    cluster.compose("--profile", "cpu", "stop", "worker-cpu")
    host2.compose("up", "-d", "--no-deps", "--wait", "worker-cpu")
    running = host2.compose("ps", "--format", "json").stdout
    assert "worker-cpu" in running and "postgres" not in running  # it runs nothing but the worker
    before = {r["id"] for r in cluster.clips()}
    assert cluster.enqueue(2, runs="1,2") == 2
    rows = cluster.assert_done_once_and_verified()
    new = [r for r in rows if r["id"] not in before]
    host2_workers = {r["worker"] for r in new}
    container = host2.compose("ps", "-q", "worker-cpu").stdout.strip()[:12]
    assert all(container in worker for worker in host2_workers), (host2_workers, container)
    host2.compose("down")
    cluster.compose("--profile", "cpu", "up", "-d", "--wait", "worker-cpu")
