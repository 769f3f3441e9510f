"""`farm bookkeeper`: serve the dashboard, the JSON API and Prometheus metrics (see farm/dashboard/)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from farm.core.settings import get_settings


def bookkeeper(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; any but this host's needs FARM_DASHBOARD_AUTH=user:password."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the dashboard (/), the JSON API (/api/...), /metrics and clip thumbnails from the database."""
    from farm.dashboard.app import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in (
        "farm",
        "tornado.access",
    ):  # our start-up line and one line per request; not Alembic's chatter
        logging.getLogger(name).setLevel(logging.INFO)
    serve(get_settings(), host, port)
