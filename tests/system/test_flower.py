"""Flower, started against the test's Redis, shows a running worker and a finished render_clip task."""

import os
import socket
import subprocess
import sys

import pytest
import requests
from farm_cluster import Processes, wait_for, write_short_motions
from seaweed import free_ports

from farm.core.celery_app import RENDER_TASK

pytestmark = [pytest.mark.services, pytest.mark.blender, pytest.mark.slow]
AUTH = ("farm", "flower-test-password")


@pytest.fixture
def flower_cluster(farm, pg_farm, redis_server, tmp_path):
    pg_farm(broker_url=redis_server.url, storage_url=str(tmp_path / "output"))
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "FLOWER_BASIC_AUTH": ":".join(AUTH),
        "FLOWER_PORT": str(port),
        "FLOWER_ADDRESS": "127.0.0.1",
    }
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "--broker", redis_server.url, "flower"],
        env=env,
        stdout=(tmp_path / "flower.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes = Processes(dict(os.environ), tmp_path)
    try:
        wait_for(lambda: _listening(port), 60, "Flower to listen")
        yield processes, f"http://127.0.0.1:{port}"
    finally:
        processes.stop_all()
        flower.terminate()
        flower.wait(30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_flower_lists_the_worker_and_the_finished_task(farm, flower_cluster, tmp_path):
    processes, flower = flower_cluster
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401  # basic auth is on
    folder = tmp_path / "motions"
    folder.mkdir()
    write_short_motions(folder, ["20_01"], 40)
    assert farm("catalog", "import", "amass", str(folder), "--name", "short").code == 0
    assert farm("enqueue", "--sequences", "short_all", "--runs", "0").code == 0
    processes.worker("worker")

    def finished_task():
        tasks = requests.get(f"{flower}/api/tasks", auth=AUTH, timeout=10).json()
        return [t for t in tasks.values() if t["name"] == RENDER_TASK and t["state"] == "SUCCESS"]

    done = wait_for(finished_task, 300, "Flower to show a finished render_clip", every=1)
    assert done[0]["result"] == "'done'" and done[0]["args"] == "[1]"
    workers = wait_for(
        lambda: requests.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=AUTH, timeout=30).json(),
        60,
        "Flower to list the worker",
        every=1,
    )
    ((name, info),) = workers.items()
    assert name.startswith("farm-cpu-") and info["stats"]["pool"]["max-concurrency"] == 1
    page = requests.get(f"{flower}/workers", auth=AUTH, timeout=10).text
    assert name in page
