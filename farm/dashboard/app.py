"""The bookkeeping service (`farm bookkeeper`): the tornado application behind the dashboard (/), the JSON API
(/api/...), Prometheus metrics (/metrics) and clip thumbnails (/thumb/ID.jpg).

/api/progress doubles as the health check (docker-compose's). The page is templates/dashboard.html, with an
inline SVG chart, so that the dashboard needs no JavaScript library and no internet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import tornado.httputil
import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.orm import Session
from tornado.ioloop import IOLoop
from tornado.template import Loader

from farm.core.db import ready_engine, safe_url, session_scope, utcnow
from farm.core.errors import FarmError
from farm.core.models import ClipStatus
from farm.core.settings import Settings
from farm.core.spec import parse_spec
from farm.core.storage import open_storage
from farm.dashboard.metrics import metrics_text
from farm.dashboard.progress import farm_status
from farm.dashboard.queries import (
    CLIP_PAGE,
    WORKER_STALE,
    clips_page,
    dashboard_data,
    done_clip_spec,
    failures,
    throughput,
    workers,
)

log = logging.getLogger(__name__)

# tornado.template escapes every {{ }} with xhtml_escape by default.
TEMPLATES = Loader(str(Path(__file__).with_name("templates")))


def thumbnail_key(spec: Any) -> str:
    """Where a finished clip's thumbnail lives in storage, next to its outputs (a FarmError for a bad spec)."""
    clip = parse_spec(spec)
    return f"{clip.output_dir}/{clip.name}_thumb.jpg"


class Bookkeeper:
    """What the handlers share: the settings and the storage the thumbnails are read from."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)

    def query(self, fn: Callable[[Session, datetime], Any]) -> Any:
        with session_scope(self.settings.database_url) as session:
            if session.get_bind().dialect.name == "postgresql":
                # These aggregates take a few ms on one core; starting parallel workers costs more than that.
                session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            return fn(session, utcnow())

    def thumbnail(self, clip_id: int) -> bytes | None:
        """A finished clip's thumbnail, or None when there is none or it is unreadable."""
        with session_scope(self.settings.database_url) as session:
            spec = done_clip_spec(session, clip_id)
        if spec is None:
            return None
        try:
            key = thumbnail_key(spec)
        except FarmError as exc:  # a spec the farm refuses (say a name with '../') names no thumbnail
            log.warning("clip %s has no thumbnail: %s", clip_id, exc)
            return None
        try:
            return self.storage.read_bytes(key)
        except Exception as exc:  # a missing thumbnail must not break the page; the log says why
            log.warning("thumbnail %s unreadable: %s", key, exc)
            return None


class Base(tornado.web.RequestHandler):
    open_to_all = False  # only the health check is

    def initialize(self, keeper: Bookkeeper) -> None:
        self.keeper = keeper
        self.target = keeper.settings.target_frames

    def set_default_headers(self) -> None:
        # On every response, errors included: a browser must not sniff a thumbnail (bytes anyone with the
        # bucket's credentials wrote) or a JSON error into HTML.
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        auth = self.keeper.settings.dashboard_auth
        if auth is None or self.open_to_all or basic_auth_matches(self.request, auth.get_secret_value()):
            return
        raise tornado.web.HTTPError(401, reason="credentials required (FARM_DASHBOARD_AUTH)")

    async def run(self, fn: Callable[[Session, datetime], Any]) -> Any:
        # Queries are blocking; a thread keeps the loop free for other requests meanwhile.
        return await IOLoop.current().run_in_executor(None, self.keeper.query, fn)

    def send_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:  # set here: tornado clears the headers before writing an error
            self.set_header("WWW-Authenticate", 'Basic realm="surreal-farm"')
        exc = kwargs.get("exc_info", (None, None))[1]
        message = str(exc) if isinstance(exc, FarmError) else self._reason
        self.finish({"error": message})

    def int_arg(self, name: str, default: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, reason=f"{name}={raw!r} is not a whole number") from None


class Health(Base):
    """For load balancers and compose: answers without credentials, and says nothing about the farm."""

    open_to_all = True

    async def get(self) -> None:
        self.send_json({"ok": True})


class Progress(Base):
    async def get(self) -> None:
        target = self.target
        self.send_json(await self.run(lambda s, _: farm_status(s, target)))


class Clips(Base):
    async def get(self) -> None:
        state = self.get_query_argument("state", None)
        limit = min(1000, max(1, self.int_arg("limit", CLIP_PAGE)))
        offset = max(0, self.int_arg("offset", 0))
        if state is not None and state not in ClipStatus.ALL:
            raise tornado.web.HTTPError(
                400, reason=f"unknown state {state!r}; use one of {', '.join(ClipStatus.ALL)}"
            )
        self.send_json(await self.run(lambda s, _: clips_page(s, state, limit, offset)))


class Failures(Base):
    async def get(self) -> None:
        self.send_json({"failures": await self.run(lambda s, _: failures(s))})


class Workers(Base):
    async def get(self) -> None:
        self.send_json(
            {"workers": await self.run(workers), "stale_after_seconds": WORKER_STALE.total_seconds()}
        )


class Throughput(Base):
    async def get(self) -> None:
        self.send_json(await self.run(throughput))


class Metrics(Base):
    async def get(self) -> None:
        target = self.target
        body = await self.run(lambda s, now: metrics_text(s, target, now))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)


class Thumb(Base):
    async def get(self, clip_id: str) -> None:
        data = await IOLoop.current().run_in_executor(None, self.keeper.thumbnail, int(clip_id))
        if data is None:
            raise tornado.web.HTTPError(404, reason=f"clip {clip_id} has no thumbnail")
        self.set_header("Content-Type", "image/jpeg")
        self.set_header("Cache-Control", "max-age=86400")  # a finished clip's thumbnail never changes
        self.finish(data)


class Dashboard(Base):
    async def get(self) -> None:
        target = self.target
        data = await self.run(lambda s, now: dashboard_data(s, target, now))
        self.set_header("Cache-Control", "no-store")
        self.finish(render_dashboard(data))


ROUTES: list[tuple[str, type[Base]]] = [
    (r"/", Dashboard),
    (r"/healthz", Health),
    (r"/api/progress", Progress),
    (r"/api/clips", Clips),
    (r"/api/failures", Failures),
    (r"/api/workers", Workers),
    (r"/api/throughput", Throughput),
    (r"/metrics", Metrics),
    (r"/thumb/([0-9]+)\.jpg", Thumb),
]


def basic_auth_matches(request: tornado.httputil.HTTPServerRequest, expected: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded, validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, expected.encode())


def make_app(settings: Settings) -> tornado.web.Application:
    keeper = Bookkeeper(settings)
    return tornado.web.Application([(path, handler, {"keeper": keeper}) for path, handler in ROUTES])


def check_exposure(settings: Settings, host: str) -> None:
    """Beyond this host the dashboard shows errors, storage paths and host names: only with credentials."""
    if settings.dashboard_auth is not None or host == "localhost":
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    raise FarmError(
        f"farm bookkeeper would listen on {host} without credentials: set FARM_DASHBOARD_AUTH=user:password, "
        "or listen on 127.0.0.1"
    )


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted. The database is checked first, so a wrong URL fails at once."""
    check_exposure(settings, host)
    ready_engine(settings.database_url)
    app = make_app(settings)

    async def main() -> None:
        try:
            app.listen(port, address=host)
        except OSError as exc:
            raise FarmError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc
        log.info("bookkeeper on http://%s:%d/ reading %s", host, port, safe_url(settings.database_url))
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# ---- the page ----


def render_dashboard(data: dict[str, Any]) -> str:
    """The dashboard page for what dashboard_data read."""
    status = data["progress"]
    split_rows = []
    for split, part in status["splits"].items():
        runs = [(None, part)] + sorted(part["runs"].items())
        for run, p in runs:
            split_rows.append(
                {
                    "id": f"{split}-{run}" if run else split,
                    "split": split,
                    "run": run,
                    "part": p,
                    "share": p["frames_done"] / p["frames_planned"] if p["frames_planned"] else 0.0,
                }
            )
    page = TEMPLATES.load("dashboard.html").generate(
        now=data["now"],
        paused=data["paused"],
        status=status,
        split_rows=split_rows,
        throughput=data["throughput"],
        chart=throughput_chart(data["throughput"]),
        failures=data["failures"],
        workers=data["workers"],
        stale_minutes=int(WORKER_STALE.total_seconds() // 60),
        recent=data["recent"],
        number=_number,
        bar_width=_bar_width,
        duration=_duration,
    )
    return page.decode()


def throughput_chart(th: dict[str, Any], width: int = 1100, height: int = 220) -> dict[str, Any]:
    """Where the chart's bars, y scale and time labels (every 4 hours) go; the template draws them."""
    left, bottom, top = 60, 24, 10
    buckets = th["buckets"]
    peak = max((b["frames"] for b in buckets), default=0) or 1
    plot_w, plot_h = width - left - 10, height - bottom - top
    step = plot_w / max(1, len(buckets))
    ticks = []
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        ticks.append({"y": f"{y:.1f}", "label_y": f"{y + 4:.1f}", "value": int(peak * frac)})
    columns = []  # each bucket's bar and time label, in the order they are drawn
    label_step = 4 * 3600  # a time label on every 4th whole hour
    for i, b in enumerate(buckets):
        x = left + i * step
        bar = label = None
        if b["frames"]:
            h = plot_h * b["frames"] / peak
            bar = {
                "x": f"{x + 0.5:.1f}",
                "y": f"{top + plot_h - h:.1f}",
                "width": f"{max(1.0, step - 1):.1f}",
                "height": f"{h:.1f}",
                "time": b["start"][11:16],
                "frames": b["frames"],
                "clips": b["clips"],
            }
        if int(datetime.fromisoformat(b["start"]).timestamp()) % label_step == 0:
            label = {"x": f"{x:.1f}", "time": b["start"][11:16]}
        if bar or label:
            columns.append({"bar": bar, "label": label})
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": left + plot_w,
        "base": top + plot_h,
        "ticks": ticks,
        "columns": columns,
    }


def _number(value: int, ident: str = "", cls: str = "") -> str:
    """A number shown with thousands separators (templates/number.html), markup escaped by the template."""
    return TEMPLATES.load("number.html").generate(value=value, ident=ident, cls=cls).decode().strip()


def _bar_width(share: float) -> str:
    return f"{100 * min(1.0, max(0.0, share)):.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (nothing finished in the last hour)"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{secs} s"
