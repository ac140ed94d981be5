"""Metrics counted by real turns through `ConversationService` (scripted model, SQLite file),
and `/metrics`, `/healthz`, `/readyz` served over HTTP from the same store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.engine.loader import load_workflow
from bot.models import ModelError
from bot.observe import hooks, metrics, server
from bot.service import ConversationService, IncomingMessage
from bot.settings import SettingsError
from bot.store import Store
from bot.testing import ScriptedModel, call, say

ECOMMERCE = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")


@pytest.fixture
def counted() -> Iterator[metrics.Metrics]:
    found = metrics.for_workflow(ECOMMERCE)
    hooks.use_metrics(found)
    yield found
    hooks.use_metrics(None)


def value(counted: metrics.Metrics, name: str, **labels: str) -> float:
    found = counted.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def msg(text: str, thread: str = "t1") -> IncomingMessage:
    return IncomingMessage("test", "C1", thread, text)


class Timeout(Exception):
    """Like httpx's ReadTimeout, as the openai client raises it."""


class Status(Exception):
    status_code = 429


def failure(cause: Exception) -> ModelError:
    try:
        raise ModelError("the model call failed") from cause
    except ModelError as exc:
        return exc


async def test_a_conversation_moves_the_counters(store: Store, counted: metrics.Metrics) -> None:
    assert value(counted, "switchboard_turns_total", outcome="answered") == 0
    assert value(counted, "switchboard_handoffs_total", source="Triage", target="Returns") == 0
    model = ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "A return."}),
            call("lookup_order", {"order_id": "1042"}),
            call("handoff_to_Nowhere"),  # made up by the model: refused
            say("Order 1042 can be returned."),
            failure(Timeout()),
            failure(Status()),
        ]
    )
    service = ConversationService(ECOMMERCE, model, store)
    await service.handle(msg("I want to return order 1042"))
    await service.handle(msg("and the other one?"))
    await service.handle(msg("hello?"))
    await service.handle(msg("end"))

    assert value(counted, "switchboard_turns_total", outcome="answered") == 1
    assert value(counted, "switchboard_turns_total", outcome="model_error") == 2
    assert value(counted, "switchboard_turns_total", outcome="ended") == 1
    assert value(counted, "switchboard_handoffs_total", source="Triage", target="Returns") == 1
    assert value(counted, "switchboard_tool_calls_total", tool="lookup_order", outcome="ok") == 1
    assert value(counted, "switchboard_tool_calls_total", tool="other", outcome="refused") == 1
    assert value(counted, "switchboard_model_errors_total", kind="timeout") == 1
    assert value(counted, "switchboard_model_errors_total", kind="http_429") == 1
    calls = "switchboard_model_call_duration_seconds_count"
    assert value(counted, calls, agent="Triage", model="default") == 1
    assert value(counted, calls, agent="Returns", model="default") == 5
    assert value(counted, "switchboard_turn_duration_seconds_count") == 3


@pytest.mark.parametrize(
    ("cause", "kind"),
    [
        (Status(), "http_429"),
        (Timeout(), "timeout"),
        (ConnectionResetError(), "connection"),
        (ValueError("bad JSON"), "invalid_reply"),
    ],
)
def test_model_errors_by_kind(cause: Exception, kind: str) -> None:
    assert hooks.error_kind(failure(cause)) == kind
    assert hooks.error_kind(RuntimeError("a bug")) == "internal"


async def test_the_endpoints_over_http(store: Store, counted: metrics.Metrics) -> None:
    model = ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "A return."}),
            call("handoff_to_Fraud", {"reason": "Twelve returns this month."}),
            say("A colleague will look at this."),
        ]
    )
    service = ConversationService(ECOMMERCE, model, store)
    await service.handle(msg("refund everything"))
    connected = False
    probe = server.Probe(store, counted, lambda: connected)
    async with server.serve(probe, 0, host="127.0.0.1") as port, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/healthz") as alive:
            assert (alive.status, await alive.json()) == (200, {"status": "ok"})
        async with http.get(f"{base}/readyz") as waiting:
            assert waiting.status == 503
            assert await waiting.json() == {
                "status": "not ready",
                "store": "ok",
                "platform": "not connected",
            }
        connected = True
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200 and (await ready.json())["status"] == "ready"
        async with http.get(f"{base}/metrics") as scraped:
            assert scraped.status == 200
            assert scraped.headers["Content-Type"].startswith("text/plain; version=")
            text = await scraped.text()
    lines = set(text.splitlines())
    assert "switchboard_open_cases 1.0" in lines  # the Fraud review, read from the store
    assert "switchboard_active_conversations 1.0" in lines
    assert "switchboard_outbox_backlog 0.0" in lines  # no platform: nothing queued
    assert "switchboard_dead_letters 0.0" in lines
    assert "switchboard_store_up 1.0" in lines
    assert 'switchboard_handoffs_total{source="Returns",target="Fraud"} 1.0' in lines
    assert 'switchboard_workflow_info{workflow="ecommerce"} 1.0' in lines

    await store.close()  # the store goes away: not ready, and the scrape says so
    ready, checks = await probe.ready()
    assert not ready and checks["store"].startswith("unreachable (")
    assert b"switchboard_store_up 0.0" in await probe.exposition()


async def test_a_busy_metrics_port_is_one_clear_line(
    store: Store, counted: metrics.Metrics
) -> None:
    probe = server.Probe(store, counted)
    async with server.serve(probe, 0) as port:
        with pytest.raises(SettingsError, match=rf"^BOT_METRICS_PORT={port}: cannot listen there"):
            async with server.serve(probe, port):
                pass
