"""The warm renderer process: `python -m blender.server FD`.

Imports bpy once and renders clip after clip for farm.render.BlenderProcessRenderer, which owns the other end
of the socket FD. Messages are pickled tuples between our own processes: in ("init", RenderOptions),
("render", (RenderJob, out_dir or None)), ("quit", None); out ("ok", result), ("progress", (done, total)), ("error", message).
With an out_dir the result's arrays travel as .npy files there (the parent maps them) rather than through the
socket. Blender's own chatter goes to stdout/stderr, which the parent sends to a log file.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from multiprocessing.connection import Connection

from farm.render import RESULT_ARRAYS


def serve(conn: Connection) -> None:
    scene = None
    while True:
        try:
            kind, payload = conn.recv()
        except EOFError:  # the parent went away
            return
        if kind == "quit":
            return
        try:
            if kind == "init":
                from blender.scene import SceneRenderer  # the one bpy import of this process

                scene = SceneRenderer(payload)
                conn.send(("ok", None))
            elif kind == "render":
                if scene is None:
                    raise RuntimeError("render before init")
                job, out_dir = payload
                result = scene.render(
                    job, lambda done, total: conn.send(("progress", (done, total))), out_dir
                )
                if out_dir is not None:  # the arrays are files in out_dir: send only the rest
                    result = dataclasses.replace(result, **{k: None for k in RESULT_ARRAYS})
                conn.send(("ok", result))
            else:
                raise RuntimeError(f"unknown message {kind!r}")
        except Exception as e:  # report and stay alive: one bad clip must not take the warm process down
            traceback.print_exc()
            conn.send(("error", f"{type(e).__name__}: {e}"))


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
