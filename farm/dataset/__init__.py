"""Rendered clips for training: `SurrealClips` (a torch Dataset), the clip reader and its conventions.

torch is imported only when `SurrealClips` or `loader` is first used (`from farm.dataset import SurrealClips`),
so `farm export` and the rest of the farm run without it. What every value of an item means: clips.py.
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
    "depth_bins",
    "load_clip",
    "loader",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    if name in ("StoredClip", "SurrealClips", "loader"):
        from farm.dataset import torch_data

        return getattr(torch_data, name)
    raise AttributeError(f"module 'farm.dataset' has no attribute {name!r}")
