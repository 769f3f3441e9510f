"""ParallelRenderer on real Blender: a clip's frames shared among warm processes, each pinned to its own CPUs,
give the files of one process; a process that dies ends the clip and the next clip starts fresh.
(tests/render/test_render_protocol.py checks its protocol against the stand-in server.)"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from test_render_blender import walk_spec

from farm.render.client import ParallelRenderer
from farm.render.job import RESULT_ARRAYS, RenderError, RenderOptions
from farm.render.prepare import prepare_clip

FRAMES = 7  # odd: the processes get 4 and 3 frames


def cpus_allowed(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":")[1].strip() for line in f if line.startswith("Cpus_allowed_list"))


@pytest.mark.blender
def test_two_processes_give_the_files_of_one():
    job = prepare_clip(walk_spec(convention="surreal"), frames=FRAMES).job
    with ParallelRenderer(RenderOptions(timeout_s=300)) as one:
        alone = one.render(job)
    with ParallelRenderer(RenderOptions(timeout_s=300, processes=2)) as two:
        shared = two.render(job)
        pids = [c.pid for c in two.children]
        assert len(pids) == 2 and all(pids)
        if len(os.sched_getaffinity(0)) >= 2:  # each process on its own CPU
            assert len({cpus_allowed(p) for p in pids}) == 2  # type: ignore[arg-type]
        assert two.device is not None and "2 Blender processes" in two.device
    for name in RESULT_ARRAYS:
        assert np.array_equal(getattr(alone, name), getattr(shared, name)), name
    assert shared.segm[FRAMES - 1].any() and shared.segm[FRAMES - 2].any()  # both processes' frames


@pytest.mark.blender
def test_a_process_that_dies_ends_the_clip_and_the_next_starts_fresh():
    job = prepare_clip(walk_spec(), frames=24).job  # long enough that neither process is done at frame 1
    with ParallelRenderer(RenderOptions(timeout_s=300, processes=2)) as renderer:
        renderer.start()
        victim = renderer.children[1].pid
        assert victim is not None

        killed = []

        def kill_on_first_frame(done: int, total: int) -> None:
            if not killed:  # the first frames may arrive together
                os.kill(victim, signal.SIGKILL)
                killed.append(done)

        with pytest.raises(RenderError, match="died while rendering"):
            renderer.render(job, kill_on_first_frame)
        assert all(c.pid is None for c in renderer.children)  # the other process was ended too
        result = renderer.render(job)
        assert result.segm.any(axis=(1, 2)).all() and renderer.restarts == 4
