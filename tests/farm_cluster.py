"""A small real cluster for tests: a private Redis, `farm worker` processes, a periodic reconciler.

Everything runs as separate processes on 127.0.0.1, exactly as on a cluster: the workers reach PostgreSQL,
Redis and SeaweedFS over TCP and render with Blender. Only the clips are short, to keep the tests quick.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from seaweed import free_ports

FARM = str(Path(sys.executable).parent / "farm")


class PrivateRedis:
    """A redis-server of the test's own, so it can be restarted with its data gone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        wait_for(lambda: _pings(redis.Redis(port=self.port)), 10, "redis-server to start")

    def restart_empty(self) -> None:
        """Kill it (no persistence: its data is gone) and start a new one on the same port."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb and pg_ctl in a temporary folder, never the machine's
    server), so it can be restarted under a running worker. As root the cluster runs as the postgres user."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = binaries[-1].parent if binaries else None
        self.root = Path(tempfile.mkdtemp(prefix="farm-pg-"))  # not under pytest's root-only tmp_path
        self.data = self.root / "data"
        self.port = free_ports(1)[0]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin is not None
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(self.bin / tool), *args], check=True, capture_output=True)

    def start(self) -> None:
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        log = str(self.root / "log")
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "-o", options, "-l", log
        )

    def restart(self) -> None:
        """A fast restart: every connection is dropped and the server comes back on the same port."""
        self._pg_ctl("restart")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop")
        shutil.rmtree(self.root, ignore_errors=True)


# Debian's libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC turns the absolute monotonic deadline of
# Python 3.11's time.sleep into a negative one (EINVAL, https://github.com/wolfcw/libfaketime/issues/426), and
# without it Python's timed lock waits hang (issue 390). This shim, preloaded before libfaketime, hands
# monotonic sleeps straight to the kernel, which is right when the monotonic clock is not faked.
FAKETIME_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req, struct timespec *rem) {
    static sleep_fn next;
    if (clock_id == CLOCK_MONOTONIC || clock_id == CLOCK_BOOTTIME)
        return syscall(SYS_clock_nanosleep, clock_id, flags, req, rem) == 0 ? 0 : errno;
    if (!next)
        next = (sleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock_id, flags, req, rem);
}
"""


def faketime_wrapper(root: Path, offset: str) -> tuple[str, ...]:
    """The command prefix that runs a program with its wall clock `offset` (faketime's -f format, e.g. +5m)
    and its monotonic clock real (FAKETIME_DONT_FAKE_MONOTONIC: a machine whose clock is off still has a
    steady monotonic one). Raises RuntimeError when faketime or a C compiler is missing."""
    faketime, cc = shutil.which("faketime"), shutil.which("cc") or shutil.which("gcc")
    if faketime is None or cc is None:
        raise RuntimeError("faketime and a C compiler are needed (`make setup` installs them)")
    (root / "faketime_shim.c").write_text(FAKETIME_SHIM)
    shim = root / "faketime_shim.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(shim), str(root / "faketime_shim.c"), "-ldl"], check=True
    )
    return ("env", f"LD_PRELOAD={shim}", "FAKETIME_DONT_FAKE_MONOTONIC=1", faketime, "-f", offset)


def _pings(client) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(client.ping())
    except Exception:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """`farm` commands running in the background, each in its own process group, stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: list[subprocess.Popen[bytes]] = []
        self.prefix = ""  # the storage prefix of the test, where it has one

    def start(
        self, name: str, *args: str, wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`farm ARGS`, run through `wrapper` (e.g. faketime) with `env` added to the cluster's."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [*wrapper, FARM, *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def worker(self, name: str, wrapper: tuple[str, ...] = (), **env: str) -> subprocess.Popen[bytes]:
        """A worker named `name` (FARM_WORKER_NAME): each test worker is a host of its own."""
        env = {"FARM_WORKER_NAME": name, **env}
        return self.start(
            name, "worker", "--concurrency", "1", "--loglevel", "info", wrapper=wrapper, env=env
        )

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        os.killpg(process.pid, sig)
        process.wait(60)

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.logs.glob("*.log"))
        )


def write_short_motions(folder: Path, names: list[str], mocap_frames: int) -> Path:
    """AMASS-style files of a gentle arm wave at 120 Hz: short clips that render in a few seconds."""
    for name in names:
        t = np.arange(mocap_frames) / 120.0
        poses = np.zeros((mocap_frames, 72))
        poses[:, 16 * 3 + 2] = -1.2 + 0.3 * np.sin(2 * np.pi * t)  # left shoulder: arm down, waving
        poses[:, 17 * 3 + 2] = 1.2
        trans = np.stack([0.3 * t, np.zeros_like(t), np.zeros_like(t)], axis=1)
        np.savez(folder / f"{name}_poses.npz", poses=poses, trans=trans, mocap_framerate=np.array(120.0))
    return folder


def blender_children(worker_pid: int) -> list[int]:
    """The Blender render servers started by a worker pool process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == worker_pid and b"blender.server" in cmdline:
            found.append(int(entry.name))
    return found
