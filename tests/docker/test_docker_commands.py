"""The commands the Dockerfiles run, run outside a container: the COPY steps and install.sh into a fresh
virtual environment, then the entrypoint starting farm commands (no Docker engine needed).

The new environment sees this checkout's .venv site-packages through a .pth file, so the dependency step
finds every pinned requirement already satisfied and downloads nothing; the farm step then builds and installs
the farm from the copied files, as the image does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_file import free_ports, needs

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

pytestmark = pytest.mark.slow


def dockerfile_steps(dockerfile: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The image's COPY (source, destination) pairs from the build context, and its RUN lines that install."""
    text = dockerfile.read_text().replace("\\\n", " ")
    copies = [
        (src, dest)
        for line in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)$", text, re.M)
        for *sources, dest in [line.split()]
        for src in sources
    ]
    runs = [line for line in re.findall(r"^RUN\s+(.+)$", text, re.M) if "install.sh" in line]
    return copies, runs


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new venv with the farm installed by the app image's own steps; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("image")
    venv, build = tmp / "venv", tmp / "opt-farm"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz-checkout-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    copies, runs = dockerfile_steps(ROOT / "docker" / "app.Dockerfile")
    build.mkdir()
    for src, dest in copies:
        if dest.startswith("/"):  # e.g. the entrypoint into /usr/local/bin: used from docker/ here
            continue
        target = build / (Path(src).name if dest.endswith("/") or dest == "./" else dest)
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / src, target)
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "TORCH_INDEX_URL": "",  # pip's configured index; torch is already satisfied anyway
        "PIP_NO_BUILD_ISOLATION": "1",  # build the farm with the setuptools already at hand, offline
    }
    assert runs == ["./install.sh deps app.lock", "./install.sh farm && rm -rf build *.egg-info"]
    for run in runs:
        result = subprocess.run(
            ["sh", "-c", run], cwd=build, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv / "bin"


def test_install_puts_a_working_farm_into_the_environment(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "python"), "-c", "import farm, migrations; print(farm.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not this checkout, whose farm/ would come first on sys.path
    ).stdout
    assert where.startswith(str(installed.parent)), where  # the installed copy, not this checkout
    assert (installed / "farm").is_file()


def run_entrypoint(bin_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    # The checkout's bin comes second: its console scripts (celery) stand in for the image's, whose
    # packages the new environment shares.
    return subprocess.Popen(
        [str(ENTRYPOINT), *args],
        env={**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", **env},
        cwd=bin_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_entrypoint_runs_farm_commands_and_programs(installed):
    proc = run_entrypoint(installed, "--help")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "surreal-farm" in out and "enqueue" in out
    proc = run_entrypoint(installed, "celery", "--version")  # a program on PATH runs as is
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and re.match(r"\d+\.\d+", out.strip()), out + err


def test_entrypoint_starts_the_bookkeeper_and_passes_it_signals(installed, tmp_path):
    (port,) = free_ports(1)
    env = {"FARM_DATABASE_URL": f"sqlite:///{tmp_path / 'farm.db'}", "FARM_STORAGE_URL": str(tmp_path)}
    proc = run_entrypoint(installed, "bookkeeper", "--host", "127.0.0.1", "--port", str(port), **env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/progress", timeout=5) as response:
                    assert json.loads(response.read())["frames_done"] == 0
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the bookkeeper did not start"
                time.sleep(0.3)
        # `exec`: the process started as the entrypoint is now the farm itself, and it gets the signal.
        assert "farm" in Path(f"/proc/{proc.pid}/cmdline").read_text()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode in (-signal.SIGTERM, 0, 143)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fake_nvidia_smi(folder: Path) -> Path:
    """A bin folder whose nvidia-smi lists two GPUs."""
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(
        '#!/bin/sh\necho "GPU 0: NVIDIA H100 (UUID: GPU-a)"\necho "GPU 1: NVIDIA H100 (UUID: GPU-b)"\n'
    )
    smi.chmod(0o755)
    return folder


def test_each_worker_container_locks_its_own_gpu(tmp_path):
    fake = fake_nvidia_smi(tmp_path / "bin")
    locks = str(tmp_path / "locks")
    holders = [
        run_entrypoint(fake, "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"; exec sleep 30', FARM_GPU_LOCKS=locks)
        for _ in range(2)
    ]
    try:
        got = sorted(p.stdout.readline().strip() for p in holders if p.stdout)
        assert got == ["0", "1"]
        third = run_entrypoint(fake, "sh", "-c", "echo started", FARM_GPU_LOCKS=locks)
        out, err = third.communicate(timeout=30)
        assert third.returncode == 1 and "all 2 GPUs" in err and "started" not in out
    finally:
        for p in holders:
            p.kill()
            p.communicate()
    again = run_entrypoint(fake, "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"', FARM_GPU_LOCKS=locks)
    assert again.communicate(timeout=30)[0].strip() == "0"  # a dead worker's GPU is free again


WORKER_UID = 10001  # the images' farm user


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder that another user can reach (pytest's own are private to this one)."""
    folder = Path(tempfile.mkdtemp(prefix="farm-gpu-locks-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def run_as_worker(fake: Path, locks: Path) -> subprocess.CompletedProcess[str]:
    """The entrypoint as the worker image runs it: as uid 10001 (when the tests run as root), one GPU lock.
    It runs from a copy beside the locks: the checkout may be in a folder that uid 10001 cannot enter."""
    entrypoint = shutil.copy2(ENTRYPOINT, locks.parent / ENTRYPOINT.name)
    argv = [str(entrypoint), "sh", "-c", 'echo "started on GPU $CUDA_VISIBLE_DEVICES"']
    if os.geteuid() == 0:
        argv = [needs("setpriv"), f"--reuid={WORKER_UID}", f"--regid={WORKER_UID}", "--clear-groups", *argv]
    env = {"PATH": f"{fake}:/usr/bin:/bin", "FARM_GPU_LOCKS": str(locks)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_a_lock_folder_the_worker_cannot_write_is_explained_in_one_sentence(shared_tmp):
    fake = fake_nvidia_smi(shared_tmp / "bin")
    locks = shared_tmp / "farm-gpus"
    # What Docker mounts when the image has no such folder: owned by root. A user that is not root cannot
    # make a folder another user's, so then it stands in with one that its owner cannot write.
    locks.mkdir(mode=0o755 if os.geteuid() == 0 else 0o555)
    result = run_as_worker(fake, locks)
    assert result.returncode == 1 and "started" not in result.stdout
    message = result.stderr.strip()
    assert "\n" not in message and not re.search(r"[.;:]\s+[A-Z]", message), message  # one sentence
    assert f"{locks} is not writable" in message and "docker volume rm" in message, message
    assert "Permission denied" not in message

    # The folder as the worker image makes it: its user's.
    if os.geteuid() == 0:
        os.chown(locks, WORKER_UID, WORKER_UID)
    else:
        locks.chmod(0o755)
    result = run_as_worker(fake, locks)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started on GPU 0"
    assert (locks / "gpu0.lock").stat().st_uid == (WORKER_UID if os.geteuid() == 0 else os.geteuid())
