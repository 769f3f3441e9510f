"""Digests of `make demo`'s clips: sha256 of every .mat file's arrays (each key, dtype, shape and bytes, so a
change of compression does not count) and of the bytes of every video and thumbnail.

tests/data/demo_digests.json holds the digests of the demo as it was before moving cameras, motion blur and the
correspondence file existed (issue 26): a default demo must still give exactly these.
`.venv/bin/python tests/demo_digests.py FOLDER` prints a demo output folder's digests as JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import scipy.io

GOLDEN = Path(__file__).resolve().parent / "data/demo_digests.json"


def digests(output: Path) -> dict[str, str]:
    out = {}
    for path in sorted(Path(output).rglob("*")):
        name = str(path.relative_to(output))
        if path.suffix == ".mat":
            h = hashlib.sha256()
            for key, value in sorted(scipy.io.loadmat(path).items()):
                if not key.startswith("__"):
                    a = np.asarray(value)
                    if a.dtype == object:  # cells of strings
                        a = np.array([str(v) for v in a.ravel()])
                    h.update(f"{key}{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
            out[name] = h.hexdigest()
        elif path.suffix in (".mp4", ".jpg"):
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


if __name__ == "__main__":
    print(json.dumps(digests(Path(sys.argv[1])), indent=0, sort_keys=True))
