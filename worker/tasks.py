"""The Celery task: `render_clip(clip_id)` on the render queue, one warm Blender per worker process.

A shared task, so it joins whichever app `farm worker` builds from the current settings (farm.core.celery_app).
"""

from __future__ import annotations

import logging
import os
import socket

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown

from farm.core.celery_app import RENDER_TASK
from farm.core.settings import get_settings
from worker import claims
from worker.process import WorkerContext, process_clip

log = logging.getLogger(__name__)
_context: WorkerContext | None = None


def worker_context() -> WorkerContext:
    """One per worker process, made at its first clip: the warm renderer lives as long as the process."""
    global _context
    if _context is None:
        from farm.core.storage import open_storage
        from farm.render.client import ParallelRenderer
        from farm.render.job import RenderOptions
        from worker.output import blender_files_producer

        settings = get_settings()
        name = f"{os.environ.get('FARM_WORKER_NAME') or socket.gethostname()}:{os.getpid()}"
        produce = blender_files_producer(ParallelRenderer(RenderOptions.from_settings(settings)), settings)
        storage = open_storage(settings, settings.upload_retry_s)
        _context = WorkerContext(settings, name, produce, storage, settings.device)
    return _context


@shared_task(name=RENDER_TASK)
def render_clip(clip_id: int) -> str:
    return process_clip(clip_id, worker_context())


# A pool process ending (prefork), or the worker itself (solo, threads): the process that rendered says it
# stopped, so the dashboard shows it gone at once instead of after its heartbeat goes stale.
@worker_process_shutdown.connect
@worker_shutdown.connect
def _say_stopped(**_: object) -> None:
    if _context is None:
        return  # rendered nothing, so never recorded
    try:
        _context.in_database(lambda db: claims.stopped(db, _context.name))  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 (shutting down: its heartbeat goes stale all the same)
        log.warning("could not record that worker %s stopped: %s", _context.name, exc)
