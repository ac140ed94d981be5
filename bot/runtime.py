"""Wiring from settings: the workflow, the model, the store and a platform behind one service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bot.engine.loader import load_workflow
from bot.engine.mcp import connected
from bot.engine.text import Bounds
from bot.models.base import ChatModel
from bot.models.select import close_model, make_model
from bot.observe import hooks
from bot.observe import tracing as traces
from bot.service import ConversationService, Platform, WindowBudget
from bot.settings import Settings, SettingsError
from bot.store import Store, store_for

if TYPE_CHECKING:
    from bot.observe.server import Connected, Probe

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_service(
    settings: Settings,
    platform: Platform | None = None,
    *,
    workflow: Path | None = None,
    database: str | None = None,
    model: ChatModel | None = None,
) -> AsyncIterator[ConversationService]:
    """A `ConversationService` on the configured workflow, model and database; closed after."""
    loaded = load_workflow(workflow or settings.bot_workflow)
    chosen = model or make_model(settings)
    try:
        async with (
            connected(loaded) as tooled,  # its agents' MCP servers, started once, stopped after
            store_for(database or settings.bot_database, serving=True) as store,
        ):
            yield ConversationService(
                tooled,
                chosen,
                store,
                platform,
                window=WindowBudget(
                    settings.bot_window_items,
                    settings.bot_window_tokens,
                    cache_bytes=settings.bot_window_cache_mb * 2**20,
                ),
                show_handoffs=settings.bot_show_handoffs,
                max_message_chars=settings.bot_max_message_chars,
                retry_delay=settings.bot_outbox_retry_s,
                settle_s=settings.settle_s(store.shared),
                start_settle_s=settings.bot_start_settle_ms / 1000,
                lease_s=settings.bot_lease_s,
                sweep_s=settings.bot_sweep_s,
                bounds=Bounds(
                    reply=settings.bot_max_reply_chars,
                    reason=settings.bot_max_reason_chars,
                    transfer_retries=settings.bot_transfer_retries,
                ),
                retention_s=settings.bot_retention_days * 86400,
                stream=settings.bot_stream,
                stream_interval=settings.bot_stream_interval_ms / 1000,
            )
    finally:
        await close_model(chosen)


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM (what a Procfile host sends) or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


@asynccontextmanager
async def serving(service: ConversationService, *, grace: float = 20.0) -> AsyncIterator[None]:
    """Say what an operator should hear, finish what earlier runs left owed, and keep sweeping
    for work left over while serving; on the way out, let running turns finish (at most `grace`
    seconds). What is left stays owed for the next start."""
    for warning in service.warnings():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    task = asyncio.create_task(_sweep(service, service.sweep_s))
    try:
        yield
    finally:
        if not await service.stop(grace):
            log.warning("shutdown: turns still running after %.0fs; they go on next time", grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep(service: ConversationService, every: float) -> None:
    """Sweep at once (what a crash left), then every `every` seconds (retries, dead peers)."""
    while True:
        try:
            await service.sweep()
        except Exception as exc:
            log.warning("sweep failed (%s); trying again", type(exc).__name__)
        await asyncio.sleep(every)


@contextlib.contextmanager
def tracing(settings: Settings, environ: Mapping[str, str] | None = None) -> Iterator[bool]:
    """Traces as the `OTEL_*` variables say (off when none is set), for the life of a command;
    what is still buffered is sent on the way out. Yields whether tracing is on."""
    try:
        on = traces.configure(environ, trace_content=settings.bot_trace_content)
    except traces.TracingError as exc:
        raise SettingsError(str(exc)) from None
    try:
        yield on
    finally:
        traces.shutdown()


@asynccontextmanager
async def monitoring(
    settings: Settings, service: ConversationService, is_connected: Connected | None = None
) -> AsyncIterator[Probe]:
    """Count the service's metrics, and serve `/metrics`, `/healthz` and `/readyz` on
    `BOT_METRICS_PORT` when it is set. The probe it yields answers `/readyz` (the adapter may
    tell it how to see that the platform is connected) and lets Slack's HTTP mode serve the same
    endpoints on its own port."""
    from bot.observe import metrics, server

    store = service.store
    if not isinstance(store, Store):
        raise TypeError(f"monitoring needs the bot's Store, not {type(store).__name__}")
    counted = metrics.for_workflow(service.workflow)
    probe = server.Probe(store, counted)
    if is_connected is not None:
        probe.connected = is_connected
    hooks.use_metrics(counted)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.bot_metrics_port is not None:
                port = await stack.enter_async_context(
                    server.serve(probe, settings.bot_metrics_port)
                )
                print(f"Metrics: /metrics, /healthz and /readyz on port {port}.", flush=True)
            yield probe
    finally:
        hooks.use_metrics(None)
