"""The bookkeeping service on a thread of its own, on a free port of 127.0.0.1 (tests and benchmarks use it)."""

from __future__ import annotations

import asyncio
import threading

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from farm.core.settings import Settings
from farm.dashboard.app import make_app


class Background:
    def __init__(self, settings: Settings) -> None:
        sockets = bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = HTTPServer(make_app(settings))
            self.server.add_sockets(sockets)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="bookkeeper", daemon=True)
        self.thread.start()
        started.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
