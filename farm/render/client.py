"""BlenderProcessRenderer: renders in `python -m blender.server`, a child process that owns bpy."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from farm.render.job import (
    FrameSink,
    Progress,
    RenderError,
    RenderJob,
    RenderOptions,
    RenderResult,
    create_result_files,
    open_result_files,
    scratch_dir,
)


@contextlib.contextmanager
def pass_files(job: RenderJob) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """A scratch folder holding the clip's zeroed pass files for Blender to fill, and read-only maps of them
    (which stay readable after the folder is removed)."""
    T, H, W = job.frame_count, job.camera.height, job.camera.width
    corr = job.spec.correspondence  # `uv` and `canon` too (20 bytes a pixel)
    scratch = scratch_dir(T * H * W * (53 if corr else 33))  # 33 bytes of passes per pixel
    with tempfile.TemporaryDirectory(prefix="surreal-passes-", dir=scratch) as out_dir:
        create_result_files(Path(out_dir), T, H, W, corr)
        yield out_dir, dict(open_result_files(Path(out_dir), T, H, W, "r", corr))


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


log = logging.getLogger(__name__)


SERVER_COMMAND = (sys.executable, "-m", "blender.server")  # the child; the socket's fd is its last argument


class _JobFailed(RenderError):
    """The child reported that a job failed and is ready for the next one, so it stays warm."""


class BlenderProcessRenderer:
    """A warm Blender: one `python -m blender.server` child that renders clip after clip.

    It is started on first use, restarted after a clip when its memory passes `memory_limit_mb` (Blender
    leaks over long runs), and restarted after it dies. A crash or timeout raises RenderError with the reason
    and the tail of Blender's log.

    Every request carries a fresh job id, and a reply tagged with another job's id is discarded: the result of
    one clip is never taken for another's. Anything that interrupts a call other than the child's own "error"
    reply (the timeout, Celery's soft time limit, a failing sink, KeyboardInterrupt) kills the child with
    SIGKILL, which also ends a stopped process, so the next clip starts a fresh one that holds nothing of the
    old clip. `command` is the child's command line without the socket's fd (tests pass a stand-in server).
    """

    def __init__(self, options: RenderOptions | None = None, command: Sequence[str] = SERVER_COMMAND) -> None:
        self.options = options or RenderOptions()
        self.command = list(command)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._log: Any = None
        self._sender: threading.Thread | None = None  # the request being written, while it is
        self.restarts = 0  # processes started, for tests and metrics
        # _kill may come from another thread (ParallelRenderer ends the others when one process fails).
        self._kill_lock = threading.RLock()
        self.device: str | None = None  # which device the child renders on, in words, once started

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def rss_mb(self) -> float:
        return _rss_mb(self._proc.pid) if self._proc else 0.0

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        parent, child = socket.socketpair()
        self._log = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            [*self.command, str(child.fileno())],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            env=env,
        )
        child.close()
        self._conn = Connection(parent.detach())
        self.restarts += 1
        with self._interruption_ends_the_child():
            self.device = self._call("init", self.options)

    @contextlib.contextmanager
    def _interruption_ends_the_child(self) -> Iterator[None]:
        """A call that ends other than by the child's reply may leave the child working on it (or stopped):
        kill it, so that nothing it still sends can reach the next job."""
        try:
            yield
        except _JobFailed:
            raise
        except BaseException:
            self._kill()
            raise

    def _log_tail(self, lines: int = 15) -> str:
        log_file = self._log  # another thread may end the child (and close its log) meanwhile
        if log_file is None:
            return ""
        try:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 8192))
            text = log_file.read().decode(errors="replace")
        except ValueError:  # closed under us
            return ""
        return "\n".join(line for line in text.splitlines()[-lines:] if not line.startswith("Fra:"))

    def _died(self, what: str, kill: bool = False) -> RenderError:
        """The child is gone or is being killed (`kill`): its exit code and last output, for the error."""
        proc = self._proc
        code = None
        if proc is not None:
            if kill:
                proc.kill()
            try:
                code = proc.wait(timeout=5)  # a crashing child is exiting: its own code says more than -9
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        tail = self._log_tail()
        self._kill()
        return RenderError(f"Blender {what} (exit code {code}); its last output:\n{tail}")

    def _call(self, kind: str, payload: Any, progress: Progress | None = None) -> Any:
        assert self._conn is not None and self._proc is not None
        job = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.timeout_s
        self._send((kind, job, payload), deadline)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out()
            conn, proc = self._conn, self._proc  # None once another thread ended the child
            try:
                if conn is None or proc is None:
                    raise EOFError
                if not conn.poll(min(remaining, 1.0)):
                    if proc.poll() is not None:
                        raise self._died("died while rendering")
                    continue
                message = conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError):
                raise self._died("died while rendering") from None
            if not (isinstance(message, tuple) and len(message) == 3):
                raise self._died(f"sent a reply outside the protocol ({type(message).__name__})", kill=True)
            tag, of_job, body = message
            if of_job != job:
                log.warning("discarded a %r reply of job %s while waiting for job %s", tag, of_job, job)
                continue
            if tag == "progress":
                if progress:
                    progress(*body)
            elif tag == "error":
                raise _JobFailed(body)
            else:
                return body

    def _send(self, message: tuple[str, str, Any], deadline: float) -> None:
        """Send a request, giving up at `deadline`: a job is larger than the socket's buffer, and a stopped
        child reads nothing, so a plain send could wait forever. The write runs in a thread, which ends
        with an error once the child is killed."""
        conn = self._conn
        assert conn is not None
        failed: list[BaseException] = []

        def send() -> None:
            try:
                conn.send(message)
            except BaseException as e:
                failed.append(e)

        self._sender = threading.Thread(target=send, name="blender-request", daemon=True)
        self._sender.start()
        self._sender.join(max(0.0, deadline - time.monotonic()))
        if self._sender.is_alive():
            raise self._timed_out()
        self._sender = None
        if failed:
            raise self._died(f"could not be reached ({failed[0]})")

    def _timed_out(self) -> RenderError:
        return self._died(
            f"took longer than {self.options.timeout_s:.0f} s on one clip and was killed", kill=True
        )

    def render(
        self, job: RenderJob, progress: Progress | None = None, sink: FrameSink | None = None
    ) -> RenderResult:
        """Render a clip. `sink` sees each frame as soon as it is decoded (the arrays are files the child
        writes and this process maps), so output can be written while Blender renders."""
        with pass_files(job) as (out_dir, mapped):

            def on_progress(done: int, total: int) -> None:
                if progress:
                    progress(done, total)
                if sink:
                    sink(mapped, done)

            # Inside the folder's context: the child is gone before its folder is removed.
            with self._interruption_ends_the_child():
                result = self.render_frames(job, out_dir, (0, 1), on_progress)
        self.recycle_if_large()
        return dataclasses.replace(result, **mapped)  # type: ignore[arg-type]  # the array fields

    def render_frames(
        self,
        job: RenderJob,
        out_dir: str,
        frames: tuple[int, int],
        progress: Progress | None,
        read: bool = True,
    ) -> RenderResult:
        """Render the clip's frames `frames` = (offset, step) into the pass files in `out_dir` (pass_files);
        the result comes without its arrays. The caller ends the child if this is interrupted."""
        self.start()
        result: RenderResult = self._call("render", (job, out_dir, frames, read), progress)
        return result

    def recycle_if_large(self) -> None:
        if self.rss_mb() > self.options.memory_limit_mb:
            self._stop()  # recycled; the next clip starts a fresh process

    def _stop(self) -> None:
        """Ask a healthy child to quit (waiting a little), then forget it."""
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("quit", None, None))
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        self._kill()

    def _kill(self) -> None:
        """End the child now (SIGKILL ends a stopped process too), reap it and forget it. Safe from any
        thread, and to repeat."""
        with self._kill_lock:
            self._end_child()

    def _end_child(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._sender is not None:  # a request still being written fails now that its reader is gone
            self._sender.join(10)
            unfinished, self._sender = self._sender.is_alive(), None
            if unfinished:  # never seen; its socket is left open rather than closed under the writer
                log.warning("a request to Blender is still being written; its socket stays open")
                self._conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> BlenderProcessRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_shares(processes: int) -> list[tuple[int, ...]]:
    """The CPUs this process may use, cut into `processes` contiguous shares (one per Blender process); with
    more processes than CPUs, each gets one CPU, in turn."""
    cpus = sorted(os.sched_getaffinity(0))
    n = max(1, processes)
    if n >= len(cpus):
        return [(cpus[k % len(cpus)],) for k in range(n)]
    return [tuple(cpus[k * len(cpus) // n : (k + 1) * len(cpus) // n]) for k in range(n)]


class ParallelRenderer:
    """Renders each clip with several warm Blender processes at once: process k of n takes frames k, k + n,
    k + 2n, ... Each is pinned to its own share of the CPUs with as many threads, so their thread pools do
    not spin against each other. Blender spends most of a frame in serial work (scene update, BVH build,
    writing the passes), so on the CPU this scales where more threads do not. Every frame still sees its
    true neighbours in the point cache: the files are byte-identical to one process's.

    The frames reach `sink` in order, as soon as every frame before them is done. If one process fails or
    the call is interrupted, the others are ended too, and the error is the first process's.
    """

    def __init__(self, options: RenderOptions | None = None, command: Sequence[str] = SERVER_COMMAND) -> None:
        self.options = options or RenderOptions()
        shares = cpu_shares(self.options.processes) if self.options.processes > 1 else [()]
        self.children = [
            BlenderProcessRenderer(
                dataclasses.replace(self.options, cpus=cpus, threads=len(cpus) or self.options.threads),
                command,
            )
            for cpus in shares
        ]

    @property
    def device(self) -> str | None:
        device = self.children[0].device
        n = len(self.children)
        return (
            device
            if device is None or n == 1
            else f"{device}, in {n} Blender processes of one CPU share each"
        )

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.children)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def rss_mb(self) -> float:
        return sum(c.rss_mb() for c in self.children)

    def render(
        self,
        job: RenderJob,
        progress: Progress | None = None,
        sink: FrameSink | None = None,
        read: bool = True,
    ) -> RenderResult:
        """As BlenderProcessRenderer.render. `read=False` only renders (the benchmark's bare rate)."""
        n, T = len(self.children), job.frame_count
        counts = [0] * n
        lock = threading.Lock()
        reported = 0
        results: list[RenderResult | None] = [None] * n
        failures: list[BaseException] = []

        with pass_files(job) as (out_dir, mapped):

            def on_progress(k: int, done: int) -> None:
                nonlocal reported
                with lock:  # one caller at a time: the sink writes files in order
                    counts[k] = done
                    prefix = min(T, *(j + n * counts[j] for j in range(n)))
                    if prefix > reported:
                        reported = prefix
                        if progress:
                            progress(prefix, T)
                        if sink:
                            sink(mapped, prefix)

            def run(k: int) -> None:
                child = self.children[k]
                try:
                    with child._interruption_ends_the_child():
                        results[k] = child.render_frames(
                            job, out_dir, (k, n), lambda done, _total: on_progress(k, done), read
                        )
                except BaseException as exc:
                    failures.append(exc)
                    for other in self.children:  # the clip is lost: stop the others now
                        if other is not child:
                            other._kill()

            threads = [threading.Thread(target=run, args=(k,), name=f"blender-{k}") for k in range(n)]
            try:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            except BaseException:
                for child in self.children:
                    child._kill()
                for t in threads:
                    t.join()
                raise
            if failures:
                raise failures[0]
        for child in self.children:
            child.recycle_if_large()
        first = results[0]
        assert first is not None
        timings = {k: max(r.timings.get(k, 0.0) for r in results if r) for k in first.timings}
        return dataclasses.replace(first, timings=timings, **mapped)  # type: ignore[arg-type]  # the arrays

    def close(self) -> None:
        for child in self.children:
            child.close()

    def __enter__(self) -> ParallelRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
