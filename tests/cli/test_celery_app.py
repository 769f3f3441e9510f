"""Celery's own tools work on the farm: a real `farm worker` answers `celery -A farm.celery_app inspect ping`;
it says at start which device Blender renders on, and stops there when it cannot have the one asked for.

The worker runs on a private Redis (Celery's remote control needs a broker with broadcast) with the embedded
SQLite database and a local output folder; the options after `--` reach Celery's worker as they are.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def worker_env(redis_server, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return env | {
        "FARM_BROKER_URL": redis_server.url,
        "FARM_DATABASE_URL": f"sqlite:///{tmp_path / 'farm.db'}",
        "FARM_STORAGE_URL": str(tmp_path / "out"),
        "FARM_RENDER_QUEUE": "ping-test",
    }


@pytest.mark.parametrize("device", ["cuda", "optix"])
def test_a_gpu_worker_without_the_gpu_stops_at_start_with_one_sentence(redis_server, tmp_path, device):
    """This machine has no NVIDIA GPU (nor do CI's): Blender is asked at start, before any clip is taken."""
    run = subprocess.run(
        [str(BIN / "farm"), "worker", "--device", device],
        cwd=tmp_path, env=worker_env(redis_server, tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    first, *more = run.stderr.splitlines()  # one sentence, no traceback
    assert run.returncode == 3 and not more, run.stderr
    assert first.startswith("error: the worker cannot start: Blender sees no") and "--device cpu" in first
    assert f"{device.upper()} device" in first


def test_a_farm_worker_answers_celerys_inspect_ping(redis_server, tmp_path):
    env = worker_env(redis_server, tmp_path)
    name = f"pinged@{socket.gethostname()}"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            str(BIN / "farm"),
            "worker",
            "--",
            "--hostname",
            name,
            "--prefetch-multiplier",
            "1",
            "--without-mingle",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ping = [str(BIN / "celery"), "-A", "farm.celery_app", "inspect", "ping", "--timeout", "3", "-d", name]
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and worker.poll() is None:
            answer = subprocess.run(ping, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            if answer.returncode == 0:
                break
            time.sleep(1)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert answer is not None and answer.returncode == 0, (
            answer,
            (tmp_path / "worker.log").read_text()[-3000:],
        )
        # Celery's own answer, from the worker named by the option passed through `farm worker --`.
        assert f"{name}: OK" in answer.stdout and "pong" in answer.stdout, answer.stdout
        # The worker said at start which device Cycles renders on.
        assert "farm worker: Cycles renders on the CPU (" in (tmp_path / "worker.log").read_text()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        log.close()
