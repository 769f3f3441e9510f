"""The farm's Celery app for Celery's own tools: `celery -A farm.celery_app inspect ping`, `... control`,
`... purge`, `... events`, and `celery -A farm.celery_app worker` (which renders like `farm worker`, without
its start-up checks).

`app` is built on first use from the settings (FARM_BROKER_URL, FARM_RENDER_QUEUE, ...), so importing this
module reads no settings and connects nowhere. It is the one module outside the rooms of tests/test_layout.py
and imports only farm.core.
"""

from __future__ import annotations

from typing import Any

from farm.core.celery_app import celery_for

# A worker started through Celery imports the render task itself; `farm worker` imports it directly.
TASK_MODULES = ("worker.tasks",)


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        app = celery_for()
        app.conf.imports = TASK_MODULES
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
