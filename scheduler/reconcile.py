"""`farm reconcile`: make the broker agree with the database, which is the source of truth.

Clips whose lease expired (their worker died) are queued again, or failed after too many attempts, and get a
new message, delayed like any failed attempt's (claims.retry_delay); queued clips that have no message in the broker (Redis lost its data, a send failed half-way,
a worker dropped one while the farm was paused) get one. Extra messages are harmless: a duplicate delivery
finds the clip taken or finished and does nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from farm.core.celery_app import celery_for, check_broker, clips_in_broker, send_render_tasks
from farm.core.db import session_scope
from farm.core.models import Clip, ClipStatus
from farm.core.settings import Settings
from worker import claims


def reconcile(settings: Settings) -> dict[str, Any]:
    app = celery_for(settings)
    check_broker(app)
    with session_scope(settings.database_url) as session:
        taken_back = claims.take_back_expired(session, settings.max_attempts)
        paused = claims.is_paused(session)
        queued = set(session.scalars(select(Clip.id).where(Clip.status == ClipStatus.QUEUED)))
    if paused:  # workers would drop the messages; `farm resume` reconciles again
        return {"taken_back": len(taken_back), "resent": 0, "queued": len(queued), "paused": True}
    # A taken-back clip's old message may still sit unacknowledged in the broker until the visibility
    # timeout, so it always gets a new one.
    missing = sorted(queued - set(clips_in_broker(app)) - set(taken_back))
    sent = send_render_tasks(app, missing)
    by_delay: dict[float, list[int]] = {}
    for clip_id, attempts in taken_back.items():
        by_delay.setdefault(claims.retry_delay(attempts, settings.retry_delay_s), []).append(clip_id)
    for delay, ids in sorted(by_delay.items()):
        sent += send_render_tasks(app, ids, countdown=delay)
    return {"taken_back": len(taken_back), "resent": sent, "queued": len(queued), "paused": False}
