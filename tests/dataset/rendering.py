"""Render one built-in clip with real Blender in both conventions at matched geometry (tests/dataset)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from walk_clip import render_walk


def render_both(root: Path, frames: int) -> dict[str, Path]:
    """The same spec rendered as clean (camera at camDist) and as surreal with camDist + 1 (the original puts
    its camera at camDist - 1 m), so both cameras stand at the same place; {convention: output root}."""
    further = 'spec.camera.model_copy(update={"distance": spec.camera.distance + 1.0})'
    variants = {
        "clean": '{"convention": "clean"}',
        "surreal": f'{{"convention": "surreal", "camera": {further}}}',
    }
    return render_walk(root, frames, variants)


def small_farm(folder: Path, frames: int, correspondence: bool = False) -> dict[str, str]:
    """The embedded demo setup (farm/cli/demo.py: SQLite database and broker, output in a folder) with two of
    the demo's train clips and one test-split clip rendered (their first `frames` frames) and marked done as a
    worker marks them; returns the FARM_ environment. `correspondence`: the test-split clip asks for it too
    (ClipSpec.correspondence: `_corr.mat`)."""
    from farm.cli.demo import demo_settings

    settings = demo_settings(folder)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FARM_")}, **settings}
    code = f"""
import json
from pathlib import Path
from sqlalchemy import select
from farm.assets.builtin_motions import builtin_library
from farm.cli.demo import plan_demo
from farm.core.db import session_scope
from farm.core.files import sha256_file
from farm.core.models import Catalog, Clip, ClipStatus, Sequence
from farm.core.settings import get_settings
from farm.core.storage import open_storage
from farm.render.client import BlenderProcessRenderer
from farm.render.job import RenderOptions
from scheduler.enqueue import store_clips
from scheduler.plan import clips_in_run
from worker.output import render_clip_files

settings = get_settings()
ids = plan_demo(settings)[:2]
test_name = next(m.name for m in builtin_library() if m.kind == "walk" and m.split == "test")
with session_scope(settings.database_url) as session:
    catalog, seq = session.execute(
        select(Catalog.name, Sequence).join(Catalog).where(Sequence.name == test_name)
    ).one()
    ids += store_clips(session, [(catalog, seq, clips_in_run(seq.mocap_frames, seq.mocap_rate, 0)[0])],
                       settings.seed, settings.body_model, convention=settings.convention)
storage = open_storage(settings)
root = Path(settings.storage_url)
with BlenderProcessRenderer(RenderOptions.from_settings(settings)) as renderer:
    for clip_id in ids:
        with session_scope(settings.database_url) as session:
            clip = session.get(Clip, clip_id)
            from farm.core.spec import ClipSpec
            spec = ClipSpec.model_validate(clip.spec)
            if {correspondence} and spec.split == "test":
                spec = spec.model_copy(update={{"correspondence": True}})
            files = render_clip_files(spec, renderer, root, frames={frames}, settings=settings)
            manifest = json.loads((root / files.files[-1]).read_text())
            clip.spec = manifest["spec"]
            clip.status = ClipStatus.DONE
            clip.frames_done = files.frames
            clip.output_uri = storage.uri(spec.output_dir)
            clip.checksums = {{str(f): {{"sha256": sha256_file(root / f), "size": (root / f).stat().st_size}}
                              for f in files.files}}
            clip.qc = files.qc
            clip.frames_with_body = files.qc["frames_with_body"]
"""
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=folder, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return env
