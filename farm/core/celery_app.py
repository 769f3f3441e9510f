"""The Celery app: the broker, the render queue, the task name, and settings for minutes-long GPU tasks."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from celery import Celery

from farm.core.db import safe_url
from farm.core.errors import FarmError, ServiceUnavailable
from farm.core.settings import Settings, get_settings

RENDER_TASK = "worker.tasks.render_clip"
PRIORITY_LEVELS = 10  # Redis priority steps 0 (served first) .. 9


def celery_for(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    return _make_celery(
        settings.broker_url,
        settings.render_queue,
        settings.clip_time_limit_s,
        settings.render_memory_limit_mb,
    )


@lru_cache
def _make_celery(broker_url: str, render_queue: str, clip_time_limit_s: int, memory_limit_mb: int) -> Celery:
    app = Celery("farm", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=render_queue,
        task_routes={RENDER_TASK: {"queue": render_queue}},
        task_serializer="json",
        accept_content=["json"],
        # Messages carry only a clip id; the database holds the spec and the outcome, so no result backend.
        task_ignore_result=True,
        # Acknowledge a clip only when its task has finished, so a worker that dies mid-clip leaves the
        # message to be delivered again ...
        task_acks_late=True,
        # ... and when a pool process is killed (SIGKILL, out of memory) the message goes straight back to
        # the queue instead of being acknowledged as failed.
        task_reject_on_worker_lost=True,
        # One clip at a time per process: prefetched minutes-long tasks would sit idle while other GPUs starve.
        worker_prefetch_multiplier=1,
        task_queue_max_priority=PRIORITY_LEVELS - 1,
        # A clip that hangs (a stuck GPU driver, a pathological scene) is stopped: softly first, so the task
        # can give the clip back with the reason, then for good.
        task_soft_time_limit=int(clip_time_limit_s * 0.9),
        task_time_limit=clip_time_limit_s,
        # Blender leaks over long runs: recycle pool processes after a number of clips or above a memory ceiling.
        worker_max_tasks_per_child=200,
        worker_max_memory_per_child=memory_limit_mb * 1024,  # kilobytes
        # Task events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    if broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {
            # Redis hands an unacknowledged message to another worker after the visibility timeout; it must
            # be far above the longest clip, or long clips would render twice. Leases recover dead workers.
            "visibility_timeout": 6 * 3600,
            # Priorities: 0 (the default, what enqueue sends) is served first; re-renders can be sent with a
            # larger number to run after the backlog.
            "priority_steps": list(range(PRIORITY_LEVELS)),
            "queue_order_strategy": "priority",
        }
    return app


def check_broker(app: Celery) -> None:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=5)
    except Exception as exc:  # kombu raises transport-specific errors
        raise ServiceUnavailable(
            f"cannot reach the broker at {safe_url(app.conf.broker_url)} ({exc}); "
            "check FARM_BROKER_URL and that it is running"
        ) from exc


def send_render_tasks(app: Celery, clip_ids: Iterable[int], countdown: float | None = None) -> int:
    """One render_clip message per clip id, to be run no sooner than `countdown` seconds from now (Celery's
    eta: a worker that receives it holds it until then). Returns how many were sent."""
    ids = list(clip_ids)
    if not ids:
        return 0
    countdown = countdown or None  # 0 is "now": no eta
    with app.producer_or_acquire() as producer:
        if not app.conf.broker_url.startswith(("redis://", "rediss://")):
            for clip_id in ids:
                app.send_task(RENDER_TASK, args=[clip_id], producer=producer, countdown=countdown)
            return len(ids)
        return _push_to_redis(app, producer.channel, ids, countdown)


def _push_to_redis(app: Celery, channel: Any, ids: list[int], countdown: float | None = None) -> int:
    """Send many messages to a Redis broker in pipelined batches.

    Celery's send_task costs about 1 ms a message on Redis (kombu makes a new client and a round trip for
    each), over a minute for the paper's 67,529 clips. So Celery builds one message, we keep what kombu
    would push for it, and push a copy per clip with its own task id and argument. The wire format stays
    Celery's and kombu's own; only the id, the argument and the delivery tag change.
    """
    captured: list[tuple[str, dict[str, Any]]] = []
    channel._put = lambda queue, message, **_: captured.append((queue, message))  # shadows the method
    try:
        app.send_task(RENDER_TASK, args=[ids[0]], producer=app.amqp.Producer(channel), countdown=countdown)
    finally:
        del channel._put
    ((queue, template),) = captured
    key = channel._q_for_pri(queue, channel._get_message_priority(template, reverse=False))
    embed = json.loads(base64.b64decode(template["body"]))[2]
    with channel.client.pipeline(transaction=False) as pipe:
        for n, clip_id in enumerate(ids, 1):
            task_id = str(uuid.uuid4())
            body = json.dumps([[clip_id], {}, embed]).encode()
            message = {
                **template,
                "body": base64.b64encode(body).decode(),
                "headers": {
                    **template["headers"],
                    "id": task_id,
                    "root_id": task_id,
                    "argsrepr": f"[{clip_id}]",
                },
                "properties": {
                    **template["properties"],
                    "correlation_id": task_id,
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
            pipe.lpush(key, json.dumps(message))
            if n % 5000 == 0:
                pipe.execute()
        pipe.execute()
    return len(ids)


def clip_id_of(message: dict[str, Any]) -> int:
    """The clip id carried by a render message as kombu stores it (the envelope with a base64 body)."""
    args = json.loads(base64.b64decode(message["body"]))[0]
    return int(args[0])


def clips_in_broker(app: Celery) -> list[int]:
    """Clip ids of every render message the broker holds: waiting, or delivered and not yet acknowledged.

    The reconciler compares these with the database to re-send what the broker lost.
    """
    queue = app.conf.task_default_queue
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        if app.conf.broker_url.startswith(("redis://", "rediss://")):
            client = channel.client
            keys = {channel._q_for_pri(queue, p) for p in channel.priority_steps}
            messages = [json.loads(p) for key in keys for p in client.lrange(key, 0, -1)]
            messages += [
                json.loads(v)[0] for v in client.hvals(channel.unacked_key)
            ]  # [message, exchange, key]
            return [clip_id_of(m) for m in messages]
        if app.conf.broker_url.startswith("sqla+"):
            queue_row = channel._get_or_create(queue)
            rows = channel.session.query(channel.message_cls).filter_by(queue_id=queue_row.id)
            return [clip_id_of(json.loads(row.payload)) for row in rows]
    raise FarmError(
        f"the broker {safe_url(app.conf.broker_url)} cannot be inspected; use Redis or the embedded default"
    )
