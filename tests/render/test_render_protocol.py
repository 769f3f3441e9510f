"""The renderer's protocol with its child, against a stand-in server (tests/standin_render_server.py) that
replays stale replies of earlier jobs and answers late: one clip's result never completes another clip, and
whatever interrupts a render ends the child, so the next clip starts a fresh one. One test stops a real
Blender child (marked `blender`); the others need no Blender."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import sys
import threading

import numpy as np
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from standin_job import standin_job

from farm.core.celery_app import celery_for
from farm.core.settings import Settings
from farm.render.client import BlenderProcessRenderer, ParallelRenderer, cpu_shares
from farm.render.job import RenderError, RenderJob, RenderOptions, render_processes

TIMEOUT_S = 4.0
FRAMES = 3


def job(clip_index: int, name: str | None = None) -> RenderJob:
    base = standin_job(FRAMES)
    spec = base.spec.model_copy(
        update={"clip_index": clip_index, "name": name or f"standin_c{clip_index:04d}"}
    )
    return dataclasses.replace(base, spec=spec)


@pytest.fixture
def standin(tmp_path):
    """Renderers whose child is the stand-in; `late_s` > 0 makes it answer its first job that late."""
    made = []

    def make(late_s: float = 0.0) -> BlenderProcessRenderer:
        command = [sys.executable, "-m", "tests.standin_render_server", str(tmp_path), str(late_s)]
        renderer = BlenderProcessRenderer(RenderOptions(timeout_s=TIMEOUT_S), command=command)
        made.append(renderer)
        return renderer

    yield make
    for renderer in made:
        renderer.close()


def gone(pid: int) -> bool:
    """The process no longer exists (it was killed and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def render_own_frames(renderer: BlenderProcessRenderer, clip_index: int) -> None:
    """Render clip `clip_index` and check that every frame, streamed or returned, is its own."""
    seen: list[tuple[int, int]] = []
    streamed: list[int] = []

    def sink(arrays: dict[str, np.ndarray], done: int) -> None:
        streamed.append(int(arrays["segm"][done - 1].min()))

    result = renderer.render(job(clip_index), progress=lambda d, t: seen.append((d, t)), sink=sink)
    assert result.software == {"job": f"standin_c{clip_index:04d}"}
    assert result.segm.shape[0] == FRAMES and (np.asarray(result.segm) == clip_index + 1).all()
    assert seen == [(t, FRAMES) for t in range(1, FRAMES + 1)]  # none of an earlier job's progress
    assert streamed == [clip_index + 1] * FRAMES


def test_replies_of_an_earlier_job_are_discarded(standin, caplog):
    renderer = standin()
    render_own_frames(renderer, 0)
    pid = renderer.pid
    with caplog.at_level(logging.WARNING, logger="farm.render.client"):
        render_own_frames(renderer, 1)  # the child first replays job 0's "progress" and "ok"
    assert renderer.pid == pid and renderer.restarts == 1
    assert sum("discarded" in r.getMessage() for r in caplog.records) == 2


def test_a_late_child_is_killed_and_its_answer_never_reaches_the_next_job(standin):
    renderer = standin(late_s=3 * TIMEOUT_S)
    renderer.start()
    first = renderer.pid
    assert first is not None
    with pytest.raises(RenderError, match=f"took longer than {TIMEOUT_S:.0f} s"):
        renderer.render(job(0))
    assert gone(first) and renderer.pid is None
    render_own_frames(renderer, 1)  # a fresh child, which still replays job 0's answer first
    assert renderer.pid != first and renderer.restarts == 2


def test_a_stopped_child_is_killed_at_the_timeout(standin):
    renderer = standin()
    renderer.start()
    stopped = renderer.pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)
    with pytest.raises(RenderError, match="took longer than"):
        renderer.render(job(0))
    assert gone(stopped)
    render_own_frames(renderer, 1)
    assert renderer.restarts == 2


@pytest.mark.parametrize(
    "fault",
    [
        SoftTimeLimitExceeded(),
        BrokenPipeError(errno.EPIPE, "ffmpeg died"),
        OSError(errno.ENOSPC, "No space left on device"),
        KeyboardInterrupt(),
    ],
    ids=["celery-soft-limit", "dead-ffmpeg", "disk-full", "keyboard-interrupt"],
)
def test_an_interrupted_render_ends_the_child_and_the_next_clip_gets_a_fresh_one(standin, fault):
    renderer = standin()
    renderer.start()
    interrupted = renderer.pid
    assert interrupted is not None

    def sink(arrays: dict[str, np.ndarray], done: int) -> None:
        raise fault

    with pytest.raises(type(fault)):
        renderer.render(job(0), sink=sink)
    assert gone(interrupted) and renderer.pid is None
    render_own_frames(renderer, 1)
    assert renderer.restarts == 2


def test_a_job_the_child_reports_bad_keeps_it_warm(standin):
    renderer = standin()
    render_own_frames(renderer, 0)
    pid = renderer.pid
    with pytest.raises(RenderError, match="bad job"):
        renderer.render(job(1, name="bad_c0001"))
    assert renderer.pid == pid
    render_own_frames(renderer, 2)
    assert renderer.pid == pid and renderer.restarts == 1


def test_the_renderer_times_out_before_celery_soft_limit():
    settings = Settings(clip_time_limit_s=100)
    options = RenderOptions.from_settings(settings)
    assert options.timeout_s == 80
    assert options.timeout_s < celery_for(settings).conf.task_soft_time_limit


@pytest.mark.blender
def test_a_stopped_blender_is_killed_and_the_next_clip_renders_its_own_frames():
    with BlenderProcessRenderer(RenderOptions(timeout_s=300)) as renderer:
        renderer.start()  # Blender's start-up is not what the short timeout below is for
        stopped = renderer.pid
        assert stopped is not None
        renderer.options = dataclasses.replace(renderer.options, timeout_s=TIMEOUT_S)

        def stop_it(done: int, total: int) -> None:
            if done == 1:
                os.kill(stopped, signal.SIGSTOP)  # mid-clip: frame 1 is out, the others are still to come

        with pytest.raises(RenderError, match=f"took longer than {TIMEOUT_S:.0f} s on one clip"):
            renderer.render(standin_job(8), progress=stop_it)
        assert gone(stopped) and renderer.pid is None
        renderer.options = dataclasses.replace(renderer.options, timeout_s=300)
        result = renderer.render(standin_job(3))
        assert renderer.restarts == 2 and renderer.pid != stopped
        assert result.segm.shape[0] == 3
        assert (np.asarray(result.segm) > 0).sum(axis=(1, 2)).min() > 500 and result.segm.max() == 24


# ---- ParallelRenderer: several children share a clip ----


@pytest.fixture
def standin_pool(tmp_path):
    command = [sys.executable, "-m", "tests.standin_render_server", str(tmp_path), "0"]
    pool = ParallelRenderer(RenderOptions(timeout_s=4.0, processes=3), command=command)
    yield pool
    pool.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no thread dies
def test_frames_reach_the_sink_in_order(standin_pool):
    clip = job(4)
    seen: list[int] = []
    threads: set[str] = set()

    def sink(arrays: dict[str, np.ndarray], done: int) -> None:
        threads.add(threading.current_thread().name)
        assert (arrays["segm"][:done] == 5).all()  # every frame before `done` is there
        seen.append(done)

    result = standin_pool.render(clip, sink=sink)
    assert seen == sorted(set(seen)) and seen[-1] == clip.frame_count
    assert (result.segm == 5).all()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no thread dies
def test_a_failing_job_fails_the_clip(standin_pool):
    with pytest.raises(RenderError, match="bad job"):
        standin_pool.render(job(1, name="bad_c0001"))
    assert (standin_pool.render(job(2)).segm == 3).all()  # and the pool renders the next


def test_the_farm_shares_cpu_clips_among_processes_one_per_core():
    cores = len(os.sched_getaffinity(0))
    assert render_processes("cpu", "cycles") == min(cores, 8)
    assert render_processes("cuda", "cycles") == render_processes("cpu", "eevee") == 1
    assert render_processes("cpu", "cycles", 3) == 3
    shares = cpu_shares(cores)
    assert sorted(c for share in shares for c in share) == sorted(os.sched_getaffinity(0))
