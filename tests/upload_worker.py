"""One worker process for the upload tests (tests/worker/test_upload_races.py): the farm's own `process_clip` on one
clip, with the farm's storage (FARM_STORAGE_URL) behind a wrapper that can pause the worker at an upload.

    python tests/upload_worker.py CLIP_ID NAME [--producer standin|blender] [--stop-at N] [--wait-at N --gate DIR]

--stop-at N   at the start of its Nth upload call (after the lease check before it) the process stops itself
              with SIGSTOP: every thread, the lease keeper's too, is frozen, as in a paused VM; SIGCONT resumes.
--wait-at N   at its Nth upload it writes DIR/paused and waits for DIR/go; the lease keeper keeps running.
--producer    `standin` (default) writes a SURREAL-named clip of random bytes, different in every attempt
              (so a file written over another is seen); `blender` renders it as `farm worker` does.

The last line printed is what process_clip returned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

UPLOADS = ("put_new", "put_file")  # the worker's upload call, whichever the code under test has


class PausingStorage:
    """The real storage, pausing the process at the start of its Nth upload."""

    def __init__(self, storage: Any, stop_at: int, wait_at: int, gate: Path | None) -> None:
        self._storage, self._stop_at, self._wait_at, self._gate = storage, stop_at, wait_at, gate
        self._uploads = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._storage, name)
        if name not in UPLOADS:
            return attr

        def upload(*args: Any, **kwargs: Any) -> Any:
            self._uploads += 1
            if self._uploads == self._stop_at:
                print(f"stopping at upload {self._uploads}", flush=True)
                os.kill(os.getpid(), signal.SIGSTOP)
            if self._uploads == self._wait_at and self._gate is not None:
                (self._gate / "paused").write_text(str(self._uploads))
                while not (self._gate / "go").exists():
                    time.sleep(0.05)
            return attr(*args, **kwargs)

        return upload


def standin_producer(worker: str):  # type: ignore[no-untyped-def]
    """NOT A RENDERER: the clip's file names with random bytes, manifest last."""

    def produce(spec: Any, folder: Path) -> tuple[list[Path], int, None]:
        out = folder / spec.output_dir
        out.mkdir(parents=True, exist_ok=True)
        names = [
            f"{spec.name}.mp4",
            f"{spec.name}_info.mat",
            f"{spec.name}_segm.mat",
            f"{spec.name}_depth.mat",
        ]
        files = []
        for i, name in enumerate(names):
            (out / name).write_bytes(os.urandom(200_000 + 1000 * i))
            files.append({"name": name, "sha256": hashlib.sha256((out / name).read_bytes()).hexdigest()})
        manifest = f"{spec.name}_manifest.json"
        (out / manifest).write_text(json.dumps({"clip": spec.name, "worker": worker, "files": files}))
        return [Path(spec.output_dir) / n for n in [*names, manifest]], spec.frame_count, None

    return produce


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip", type=int)
    parser.add_argument("name")
    parser.add_argument("--producer", choices=["standin", "blender"], default="standin")
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("--wait-at", type=int, default=0)
    parser.add_argument("--gate", type=Path)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from farm.core.settings import get_settings
    from farm.core.storage import open_storage
    from worker.process import WorkerContext, process_clip

    settings = get_settings()
    storage = PausingStorage(
        open_storage(settings, settings.upload_retry_s), args.stop_at, args.wait_at, args.gate
    )
    renderer = None
    if args.producer == "blender":
        from farm.render.client import BlenderProcessRenderer
        from farm.render.job import RenderOptions
        from worker.output import blender_files_producer

        renderer = BlenderProcessRenderer(RenderOptions.from_settings(settings))
        produce = blender_files_producer(renderer, settings)
    else:
        produce = standin_producer(args.name)
    try:
        result = process_clip(args.clip, WorkerContext(settings, args.name, produce, storage))
    finally:
        if renderer is not None:
            renderer.close()
    print(result, flush=True)


if __name__ == "__main__":
    main()
