"""Render one built-in clip with real Blender in both conventions at matched geometry (tests/dataset)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SEQUENCE, RUN, CLIP = "walk_s01_01", 0, 2


def render_both(root: Path, frames: int) -> dict[str, Path]:
    """The same spec rendered as clean (camera at camDist) and as surreal with camDist + 1 (the original puts
    its camera at camDist - 1 m), so both cameras stand at the same place; {convention: output root}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    env["FARM_DATABASE_URL"] = f"sqlite:///{root / 'farm.db'}"
    farm = str(Path(sys.executable).parent / "farm")
    subprocess.run([farm, "catalog", "import", "builtin"], env=env, cwd=root, check=True, capture_output=True)
    code = f"""
import sys
from pathlib import Path
from farm.cli.render_clip import resolve_spec
from farm.core.settings import get_settings
from farm.render.client import BlenderProcessRenderer
from farm.render.job import RenderOptions
from worker.output import render_clip_files
settings = get_settings()
spec, _ = resolve_spec(settings, {SEQUENCE!r}, {RUN}, {CLIP})
clean = spec.model_copy(update={{"convention": "clean"}})
camera = spec.camera.model_copy(update={{"distance": spec.camera.distance + 1.0}})
surreal = spec.model_copy(update={{"convention": "surreal", "camera": camera}})
with BlenderProcessRenderer(RenderOptions.from_settings(settings)) as renderer:
    for s in (clean, surreal):
        render_clip_files(s, renderer, Path(sys.argv[1]) / s.convention, frames={frames}, settings=settings)
"""
    run = subprocess.run(
        [sys.executable, "-c", code, str(root)], env=env, cwd=root, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {c: root / c for c in ("clean", "surreal")}
