"""Storage throughput on a real SeaweedFS (`weed mini`, started here) and on a local folder.

    .venv/bin/python benchmarks/storage.py [--clips 12] [--workers 1,4,8] [--small]

One "clip" is a SURREAL-sized set of files of incompressible bytes (an mp4 and the ground-truth arrays;
about 27 MB). For each number of concurrent uploaders (threads, as several worker processes would be) it
uploads every clip's files with put_new (the workers' create-only write) and prints MB/s and clips/s, then
times an idempotent re-put of the same files (nothing is sent), a quick check (stat: one HEAD per object)
and a deep one (download + sha256). --small is --clips 1 --workers 1,2, the quick run of `make test`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _paths  # noqa: F401  (the checkout, then tests/, first on sys.path)
from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedS3

from farm.core.storage import LocalStorage, S3Storage, Storage

# name suffix -> size in bytes, roughly one 100-frame 320x240 SURREAL clip
CLIP_FILES = {
    ".mp4": 2_000_000,
    "_depth.npz": 8_000_000,
    "_segm.npz": 1_000_000,
    "_normal.npz": 6_000_000,
    "_gtflow.npz": 10_000_000,
    "_info.json": 50_000,
}


def make_clip(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for suffix, size in CLIP_FILES.items():
        path = folder / f"clip{suffix}"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench(storage: Storage, files: list[Path], clips: int, workers: int, run_id: str) -> list[str]:
    keys = [[f"bench/{run_id}/w{workers}/c{c:04d}/{f.name}" for f in files] for c in range(clips)]
    clip_bytes = sum(f.stat().st_size for f in files)

    def each_clip(op: Callable[[int], None]) -> float:
        with ThreadPoolExecutor(workers) as pool:
            return timed(lambda: list(pool.map(op, range(clips))))

    def upload(c: int) -> None:
        for f, key in zip(files, keys[c], strict=True):
            storage.put_new(f, key)

    put = each_clip(upload)
    again = each_clip(upload)
    quick = each_clip(lambda c: [storage.stat(k) for k in keys[c]] and None)
    deep = each_clip(lambda c: [storage.hash(k) for k in keys[c]] and None)
    mb = clips * clip_bytes / 1e6
    return [
        f"{workers:>3}",
        f"{mb / put:8.1f}",
        f"{clips / put:7.2f}",
        f"{clips / again:9.1f}",
        f"{clips * len(files) / quick:9.0f}",
        f"{mb / deep:8.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--workers", default="1,4,8")
    parser.add_argument("--small", action="store_true", help="a quick run: --clips 1 --workers 1,2")
    args = parser.parse_args()
    if args.small:
        args.clips, args.workers = 1, "1,2"
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        files = make_clip(Path(tmp) / "clip")
        server = SeaweedS3(Path(tmp) / "seaweed")
        started = time.perf_counter()
        server.start()
        print(f"weed mini ready in {time.perf_counter() - started:.1f} s at {server.endpoint}")
        try:
            targets: dict[str, Storage] = {
                "seaweedfs": S3Storage(
                    server.bucket, "bench", server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
                ),
                "local": LocalStorage(Path(tmp) / "out"),
            }
            size = sum(CLIP_FILES.values()) / 1e6
            print(
                f"{args.clips} clips of {len(CLIP_FILES)} files, {size:.1f} MB each, per storage and concurrency\n"
            )
            header = ["storage", "thr", "put MB/s", "clips/s", "re-put c/s", "stat obj/s", "hash MB/s"]
            print(" | ".join(header))
            for name, storage in targets.items():
                for w in workers:
                    print(
                        " | ".join([f"{name:<9}", *bench(storage, files, args.clips, w, f"{time.time_ns()}")])
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
