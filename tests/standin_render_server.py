"""A stand-in for `python -m blender.server` that speaks its protocol without Blender, and misbehaves.

`python -m tests.standin_render_server STATE LATE_S FD`: STATE is a folder that outlives the process, where
it notes every job id it was given. For every render it first allocates the pass files (empty, as Blender's
are before the first frame), then replays a "progress" and an "ok" of every earlier job noted in STATE, as a
child still finishing an old clip would; only then does it fill its passes (segm = the clip index + 1, so a
test sees whose frames it got) and answer. With LATE_S > 0 the very first render job noted in STATE is
answered only after LATE_S seconds, which is after the parent gave up on it. A clip named "bad..." gets an
"error" reply, as a bad job does from Blender.
"""

from __future__ import annotations

import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from farm.render.job import RenderResult, open_result_files


def answer(clip: str) -> RenderResult:
    """What a render of `clip` sends when its arrays are files: everything else."""
    return RenderResult(None, None, None, None, None, None, None, software={"job": clip})  # type: ignore[arg-type]


def serve(conn: Connection, state: Path, late_s: float) -> None:
    noted = state / "jobs"
    while True:
        kind, job_id, payload = conn.recv()
        if kind == "quit":
            return
        if kind == "init":
            conn.send(("ok", job_id, None))
            continue
        job, out_dir, (offset, step), _read = payload
        earlier = noted.read_text().split() if noted.exists() else []
        with noted.open("a") as f:
            f.write(f"{job_id} {job.spec.name}\n")
        T, H, W = job.frame_count, job.camera.height, job.camera.width
        arrays = open_result_files(Path(out_dir), T, H, W)  # the parent made them
        for old_id, old_name in zip(earlier[::2], earlier[1::2], strict=True):
            conn.send(("progress", old_id, (T, T)))
            conn.send(("ok", old_id, answer(old_name)))
        if late_s > 0 and not earlier:
            time.sleep(late_s)
        if job.spec.name.startswith("bad"):
            conn.send(("error", job_id, f"ValueError: {job.spec.name} is a bad job"))
            continue
        mine = range(offset, T, step)
        for done, t in enumerate(mine, start=1):
            arrays["segm"][t] = job.spec.clip_index + 1
            arrays["segm"].flush()
            conn.send(("progress", job_id, (done, len(mine))))
        conn.send(("ok", job_id, answer(job.spec.name)))


def main() -> None:
    state, late_s, fd = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    conn = Connection(fd)
    try:
        serve(conn, state, late_s)
    except EOFError:
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    main()
