"""The warm renderer process: `python -m blender.server FD`.

Imports bpy once and renders clip after clip for farm.render.BlenderProcessRenderer, which owns the other end
of the socket FD. Messages are pickled tuples between our own processes: in ("init", RenderOptions),
("render", RenderJob), ("quit", None); out ("ok", result), ("progress", (done, total)), ("error", message).
Blender's own chatter goes to stdout/stderr, which the parent sends to a log file.
"""

from __future__ import annotations

import sys
import traceback
from multiprocessing.connection import Connection


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
                result = scene.render(payload, lambda done, total: conn.send(("progress", (done, total))))
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
