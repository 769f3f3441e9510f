"""The fixed sets of values that the clip spec, the settings and the command line share. Plain Literals, so that
`farm` can build its options (and print its help) without importing pydantic."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "test"]
# What the output's values mean: "surreal" (the default) means exactly what the original's files mean, quirks
# included (mirrored frames, the raw speed pass as flow, world-frame normals); "clean" is the farm's own
# unmirrored OpenCV-style convention. Both are described in farm/render/__init__.py and the README.
Convention = Literal["surreal", "clean"]
Device = Literal["cpu", "cuda", "optix"]  # the render device: the CPU, or NVIDIA GPUs through CUDA or OptiX
Engine = Literal["cycles", "eevee"]
