"""`farm demo`: the whole farm on one machine with no servers, end to end, in a few minutes.

It plans a handful of clips of different built-in motions with the free body, starts a real worker as a child
process on the embedded SQLite broker, follows the clips in the database with a progress bar, and ends with
where the output and a contact sheet are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.core.errors import FarmError

if TYPE_CHECKING:
    from farm.core.settings import Settings

DEMO_MOTIONS = ("walk", "run", "jump", "wave")  # the first train sequence of each, clip 1 of run 0
DEMO_TIMEOUT_S = 900


def demo_settings(folder: Path) -> dict[str, str]:
    """The embedded defaults, kept inside the demo's own folder."""
    return {
        "FARM_DATABASE_URL": f"sqlite:///{folder / 'farm.db'}",
        "FARM_BROKER_URL": f"sqla+sqlite:///{folder / 'farm-broker.db'}",
        "FARM_STORAGE_URL": str(folder / "output"),
        "FARM_RENDER_QUEUE": "render",
        "FARM_BODY_MODEL": "free",
    }


def plan_demo(settings: Settings) -> list[int]:
    """Store one clip of each demo motion (idempotent); returns their clip ids."""
    from sqlalchemy import select

    from farm.assets.builtin_motions import builtin_library
    from farm.core.celery_app import celery_for, send_render_tasks
    from farm.core.db import session_scope
    from farm.core.models import Catalog, Clip, Sequence
    from scheduler.catalogs import builtin_sequences, register_catalog
    from scheduler.enqueue import store_clips
    from scheduler.plan import clips_in_run

    names = [
        next(m.name for m in builtin_library() if m.kind == kind and m.split == "train")
        for kind in DEMO_MOTIONS
    ]
    with session_scope(settings.database_url) as session:
        register_catalog(session, "builtin", "builtin", "builtin:", builtin_sequences())
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Catalog.name, Sequence)
            .join(Catalog)
            .where(Catalog.name == "builtin", Sequence.name.in_(names))
        ).all()
        plan = [(c, s, clips_in_run(s.mocap_frames, s.mocap_rate, 0)[0]) for c, s in rows]
        new_ids = store_clips(
            session, plan, settings.seed, settings.body_model, convention=settings.convention
        )
    send_render_tasks(celery_for(settings), new_ids)
    with session_scope(settings.database_url) as session:
        ids = (
            select(Clip.id)
            .join(Sequence)
            .where(Sequence.name.in_(names), Clip.run == 0, Clip.clip_index == 0)
        )
        return list(session.scalars(ids))


def run_demo(folder: Path, progress: Any) -> dict[str, Any]:
    """Render the demo clips into `folder`; returns the clips' outcomes and where things are."""
    from sqlalchemy import func, select

    from farm.core.db import session_scope
    from farm.core.models import Clip
    from farm.core.settings import Settings

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FARM_")}, **demo_settings(folder)}
    settings = Settings.model_validate(
        {k.removeprefix("FARM_").lower(): v for k, v in demo_settings(folder).items()}
    )
    ids = plan_demo(settings)
    total_frames = _frames(settings, ids)
    task = progress.add_task("rendering the demo clips", total=total_frames)
    worker_log = (folder / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "farm.cli.main", "worker", "--concurrency", "1", "--loglevel", "warning"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        while True:
            with session_scope(settings.database_url) as session:
                states = dict(
                    session.execute(
                        select(Clip.status, func.count()).where(Clip.id.in_(ids)).group_by(Clip.status)
                    ).all()
                )
                done_frames = session.scalar(select(func.sum(Clip.frames_done)).where(Clip.id.in_(ids))) or 0
            progress.update(task, completed=done_frames)
            if states.get("done", 0) + states.get("failed", 0) == len(ids):
                break
            if worker.poll() is not None:
                raise FarmError(f"the demo worker stopped unexpectedly; see {folder / 'worker.log'}")
            if time.monotonic() > deadline:
                raise FarmError(f"the demo did not finish in {DEMO_TIMEOUT_S} s; see {folder / 'worker.log'}")
            time.sleep(1)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        worker_log.close()
    return _report(settings, ids, folder)


def _frames(settings: Settings, ids: list[int]) -> int:
    from sqlalchemy import func, select

    from farm.core.db import session_scope
    from farm.core.models import Clip

    with session_scope(settings.database_url) as session:
        return int(
            session.scalar(select(func.sum(Clip.frame_stop - Clip.frame_start)).where(Clip.id.in_(ids))) or 0
        )


def _report(settings: Settings, ids: list[int], folder: Path) -> dict[str, Any]:
    from sqlalchemy import select

    from farm.core.db import session_scope
    from farm.core.models import Clip
    from farm.core.spec import parse_spec
    from worker.contact_sheet import contact_sheet_for_clip

    with session_scope(settings.database_url) as session:
        clips = session.scalars(select(Clip).where(Clip.id.in_(ids)).order_by(Clip.id)).all()
        rows = [(c.name, c.status, c.frames_done, c.error, parse_spec(c.spec)) for c in clips]
    output = Path(settings.storage_url)
    sheet = folder / "contact_sheet.png"
    done = [spec for _, status, _, _, spec in rows if status == "done"]
    if done:
        contact_sheet_for_clip(output / done[0].output_dir, done[0].name, sheet)
    return {
        "clips": [{"name": n, "status": s, "frames": f, "error": e} for n, s, f, e, _ in rows],
        "output": str(output),
        "contact_sheet": str(sheet) if done else None,
        "database": settings.database_url,
    }
