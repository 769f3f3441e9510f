"""Render the built-in walking clip (walk_s01_01, run 0, clip 2) with real Blender, in variants of its spec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SEQUENCE, RUN, CLIP = "walk_s01_01", 0, 2
NAME = "walk_s01_01_c0003"


def render_walk(
    root: Path,
    frames: int,
    variants: dict[str, str],
    setup: str = "",
    renderer: str = "BlenderProcessRenderer",
) -> dict[str, Path]:
    """Import the built-in catalog into a SQLite farm under `root`, then render the clip's first `frames` frames
    once per variant, into root/<variant>, in one process with one warm `renderer` (of farm.render.client).
    A variant is Python source of the spec's update (`spec.model_copy(update=...)`), run after `setup`, with
    `spec` the clip's planned spec. Returns {variant: its output root}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_DATABASE_URL"] = f"sqlite:///{root / 'farm.db'}"
    farm = str(Path(sys.executable).parent / "farm")
    subprocess.run([farm, "catalog", "import", "builtin"], env=env, cwd=root, check=True, capture_output=True)
    renders = "\n".join(
        f"    render_clip_files(spec.model_copy(update={update}), renderer, root / {name!r}, frames={frames}, "
        "settings=settings)"
        for name, update in variants.items()
    )
    code = f"""
import sys
from pathlib import Path
from farm.cli.render_clip import resolve_spec
from farm.core.settings import get_settings
from farm.render.client import {renderer}
from farm.render.job import RenderOptions
from worker.output import render_clip_files
settings = get_settings()
spec, _ = resolve_spec(settings, {SEQUENCE!r}, {RUN}, {CLIP})
root = Path(sys.argv[1])
{setup}
with {renderer}(RenderOptions.from_settings(settings)) as renderer:
{renders}
"""
    run = subprocess.run(
        [sys.executable, "-c", code, str(root)], env=env, cwd=root, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {name: root / name for name in variants}
