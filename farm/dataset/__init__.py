"""Rendered clips for training: `SurrealClips` (a torch Dataset), the clip reader and its conventions.

torch is imported only when `SurrealClips` or `loader` is first used (`from farm.dataset import SurrealClips`),
so `farm export` and the rest of the farm run without it. What every value of an item means: clips.py. Shards of
`farm export shards` read back into the same items: shards.py (`decode_sample`, `shard_dataset`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from farm.dataset.clips import (
    DEPTH_BIN_M,
    DEPTH_BINS,
    PART14_NAMES,
    PARTS14,
    ClipFileError,
    ClipRef,
    depth_bins,
    load_clip,
    read_manifest,
)
from farm.dataset.shards import decode_sample, shard_dataset

if TYPE_CHECKING:
    from farm.dataset.torch_data import StoredClip, SurrealClips, loader

__all__ = [
    "DEPTH_BINS",
    "DEPTH_BIN_M",
    "PARTS14",
    "PART14_NAMES",
    "ClipFileError",
    "ClipRef",
    "StoredClip",
    "SurrealClips",
    "decode_sample",
    "depth_bins",
    "load_clip",
    "loader",
    "read_manifest",
    "shard_dataset",
]


def __getattr__(name: str) -> Any:
    if name in ("StoredClip", "SurrealClips", "loader"):
        from farm.dataset import torch_data

        return getattr(torch_data, name)
    raise AttributeError(f"module 'farm.dataset' has no attribute {name!r}")
