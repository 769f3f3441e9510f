"""docker-compose.yml as compose reads it, and what the docker tests need to run its services' commands
outside containers: free ports, a process's listening sockets, an address of this machine other than 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml
from conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = {  # stand-ins for cluster.env; each must reach the services only through ${...} or env_file
    "POSTGRES_PASSWORD": "pgSecret123",
    "REDIS_PASSWORD": "redisSecret456",
    "S3_ACCESS_KEY": "s3Key789",
    "S3_SECRET_KEY": "s3Secret012",
    "FLOWER_BASIC_AUTH": "admin:flowerSecret345",
    "FARM_DASHBOARD_AUTH": "admin:dashboardSecret678",
    "GRAFANA_ADMIN_PASSWORD": "grafanaSecret901",
}
SECRET_VALUES = {key: value.partition(":")[2] or value for key, value in SECRETS.items()}  # user:password


def needs(program: str) -> str:
    """The program's path; a missing one skips the test (fails under CI=true)."""
    found = shutil.which(program)
    if found is None:
        service_missing(program, FileNotFoundError(f"{program} is not installed (run `make system-deps`)"))
    return str(found)


def compose_config(env_file: Path | None, project: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (Debian's docker-compose 1.29: parses and interpolates without an engine);
    without env_file, compose reads the project folder's .env."""
    args = [needs("docker-compose"), "--project-directory", str(project), "-f", str(COMPOSE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    return subprocess.run([*args, "config"], capture_output=True, text=True, cwd=ROOT, timeout=60)


def parsed_config(folder: Path, **settings: str) -> dict[str, Any]:
    """The interpolated compose file with SECRETS (and settings) as cluster.env, which is also the farm's
    containers' env_file (CLUSTER_ENV)."""
    env = folder / "cluster.env"
    values = {**SECRETS, "CLUSTER_ENV": str(env), **settings}
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    result = compose_config(env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def service_argv(service: dict[str, Any]) -> list[str]:
    """Entrypoint and command, with the paths of the service's bind mounts put back to this checkout's files."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = source
    return [mounts.get(str(a), str(a)) for a in [*service.get("entrypoint", []), *service["command"]]]


def free_ports(count: int) -> list[int]:
    """Distinct ports free now on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in sockets]
    for s in sockets:
        s.close()
    return ports


def outside_address() -> str:
    """An address of this machine that a socket bound to 127.0.0.1 does not answer on, as another host's
    connection would arrive: the address of the default route's interface, else 127.0.0.2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # a UDP connect sends nothing; it only picks the source address
            address = str(s.getsockname()[0])
        except OSError:
            address = ""
    if address and not ipaddress.ip_address(address).is_loopback:
        return address
    return "127.0.0.2"


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word of the address in the host's (little-endian) byte order.
    return str(ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))))


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that the process listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((_address(address), int(port, 16)))
    return found


def refused(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((address, port)) != 0
