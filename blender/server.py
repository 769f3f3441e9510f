"""The warm renderer process: `python -m blender.server FD`.

Imports bpy once and renders clip after clip for farm.render.client.BlenderProcessRenderer, which owns the other end
of the socket FD. Messages are pickled tuples between our own processes, each tagged with the id of the job
(one request) it belongs to: in ("init", job, RenderOptions) (answered with the
device it renders on, in words), ("render", job, (RenderJob, out_dir or None, (offset, step) of the frames to
render, read)),
("quit", job, None); out ("ok", job, result), ("progress", job, (done, total)), ("error", job, message), with
the id of the request being answered. The parent discards a reply tagged with any other id, so a late reply
to a job it gave up on can never complete the next one (it also kills a child that did not answer in time).
With an out_dir the result's arrays travel as .npy files there (the parent made them, farm.render.job.
create_result_files, and maps them) rather than through the socket. Blender's own chatter goes to
stdout/stderr, which the parent sends to a log file.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from farm.render.job import CORRESPONDENCE_ARRAYS, RESULT_ARRAYS


def serve(conn: Connection) -> None:
    scene = None
    while True:
        try:
            kind, job_id, payload = conn.recv()
        except EOFError:  # the parent went away
            return
        if kind == "quit":
            return
        try:
            if kind == "init":
                # Before bpy starts its thread pool, which sizes itself to the CPUs it may use.
                if payload.cpus:
                    os.sched_setaffinity(0, set(payload.cpus))
                from blender.scene import SceneRenderer  # the one bpy import of this process

                scene = SceneRenderer(payload)
                conn.send(("ok", job_id, scene.device))  # which device it renders on, in words
            elif kind == "render":
                if scene is None:
                    raise RuntimeError("render before init")
                job, out_dir, frames, read = payload

                def progress(done: int, total: int, of: object = job_id) -> None:
                    conn.send(("progress", of, (done, total)))

                result = scene.render(job, progress, out_dir, read, frames)
                if out_dir is not None:  # the arrays are files in out_dir: send only the rest
                    # None in the array fields while in transit; the parent maps the files in their place.
                    no_arrays: dict[str, Any] = {k: None for k in RESULT_ARRAYS + CORRESPONDENCE_ARRAYS}
                    result = dataclasses.replace(result, **no_arrays)
                conn.send(("ok", job_id, result))
            else:
                raise RuntimeError(f"unknown message {kind!r}")
        except Exception as e:  # report and stay alive: one bad clip must not take the warm process down
            traceback.print_exc()
            conn.send(("error", job_id, f"{type(e).__name__}: {e}"))


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
