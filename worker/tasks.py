"""The Celery task: `render_clip(clip_id)` on the render queue, one warm Blender per worker process.

A shared task, so it joins whichever app `farm worker` builds from the current settings (farm.core.celery_app).
"""

from __future__ import annotations

import os
import socket

from celery import shared_task

from farm.core.celery_app import RENDER_TASK
from farm.core.settings import get_settings
from worker.process import WorkerContext, process_clip

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
