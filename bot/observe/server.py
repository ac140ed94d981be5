"""`/metrics`, `/healthz` and `/readyz` over HTTP (aiohttp, as Slack's HTTP mode uses).

`/healthz` answers 200 while the process's event loop runs. `/readyz` answers 200 when the store
answers a read and the platform is connected, else 503, with a JSON body saying which. `/metrics`
is the Prometheus text format; the figures that live in the store are read from it at each scrape
(one bounded read, at most `STORE_TIMEOUT_S`), so nothing is counted on the write path for them.

Slack's HTTP mode adds these routes to its events app (one port); every other serving process
starts `serve` on `BOT_METRICS_PORT`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.observe.metrics import Metrics
from bot.settings import SettingsError
from bot.store import Store, ops_stats

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 2.0
ACTIVE_S = 24 * 3600  # a conversation with a message in this long is active
Connected = Callable[[], bool | Awaitable[bool]]


def _never() -> bool:
    return False


@dataclass(eq=False)
class Probe:
    """What the endpoints ask: the store, the platform's connection, and the metrics. The
    adapter sets `connected` once it knows how to tell (a Socket Mode client, a gateway)."""

    store: Store
    metrics: Metrics
    connected: Connected = _never

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether the process can serve, and each check's finding."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self.store.schema_version()
            checks["store"] = "ok"
        except Exception as exc:  # any failure to answer is "not ready", said in one word
            checks["store"] = f"unreachable ({type(exc).__name__})"
        try:
            answer = self.connected()
            connected = await answer if inspect.isawaitable(answer) else answer
        except Exception as exc:
            connected, checks["platform"] = False, f"unknown ({type(exc).__name__})"
        else:
            checks["platform"] = "connected" if connected else "not connected"
        return checks["store"] == "ok" and bool(connected), checks

    async def exposition(self) -> bytes:
        """The metrics in Prometheus' text format, with the store's figures read now."""
        metrics = self.metrics
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                found = await self.store.driver.read(
                    ops_stats.figures(time.time() - ACTIVE_S), "figures"
                )
        except Exception as exc:
            log.warning("metrics: the store did not answer (%s)", type(exc).__name__)
            metrics.store_up.set(0)
        else:
            metrics.store_up.set(1)
            metrics.outbox_backlog.set(found.outbox_backlog)
            metrics.dead_letters.set(found.dead_letters)
            metrics.open_cases.set(found.open_cases)
            metrics.active_conversations.set(found.active_conversations)
        return generate_latest(metrics.registry)


def add_routes(app: web.Application, probe: Probe) -> None:
    """Serve `/metrics`, `/healthz` and `/readyz` from `app`."""

    async def metrics(request: web.Request) -> web.Response:
        body = await probe.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, checks = await probe.ready()
        body = {"status": "ready" if ready else "not ready", **checks}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


@asynccontextmanager
async def serve(probe: Probe, port: int, host: str = "0.0.0.0") -> AsyncIterator[int]:
    """Serve the endpoints on `port` (0: any free one) while the context is open; yields the
    port it listens on. A port it cannot listen on is a `SettingsError`."""
    app = web.Application()
    add_routes(app, probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise SettingsError(
                f"BOT_METRICS_PORT={port}: cannot listen there ({exc.strerror or exc}); "
                "pick a free port"
            ) from None
        yield int(runner.addresses[0][1]) if runner.addresses else port
    finally:
        await runner.cleanup()
