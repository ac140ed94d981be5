"""Traces of real turns through `ConversationService` (scripted model, SQLite file), caught by
the OpenTelemetry SDK's in-memory exporter; and tracing set up from `OTEL_*` variables."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bot.engine import Agent, HandoffBuilder
from bot.models import ModelError, ModelReply, ToolCall, Usage
from bot.observe import tracing
from bot.service import ConversationService, IncomingMessage
from bot.store import Store
from bot.testing import RecordingPlatform, ScriptedModel, call

MESSAGE = "I want a refund for order 42, my card is 4111 1111 1111 1111"


def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: delivered on Monday"


WORKFLOW = (
    HandoffBuilder(
        participants=[
            Agent("Triage", "Route.", "Greets and routes."),
            Agent("Returns", "Refund.", "Returns.", tools=(lookup_order,), model="gpt-test"),
        ],
        name="traced",
    )
    .with_start_agent("Triage")
    .add_handoff("Triage", ["Returns"])
    .build()
)


def script() -> ScriptedModel:
    lookup = ToolCall("call_lookup", "lookup_order", '{"order_id": "42"}')
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "The customer wants a refund."}),
            ModelReply(tool_calls=(lookup,), usage=Usage(120, 9), model="gpt-test-2025"),
            ModelReply(text="Order 42 was delivered; I can refund it.", usage=Usage(150, 12)),
        ]
    )


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    caught = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caught))
    tracing.use(provider)
    yield caught
    tracing.shutdown()


def tree(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, str | None]]:
    """(name, parent's name) of every span, in the order they started."""
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    ordered = sorted(spans, key=lambda span: span.start_time or 0)
    return [(s.name, names.get(s.parent.span_id) if s.parent else None) for s in ordered]


async def test_one_turn_with_a_handoff_and_a_tool_call_is_one_tree(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    service = ConversationService(WORKFLOW, script(), store, RecordingPlatform())
    result = await service.handle(IncomingMessage("test", "C1", "t1", MESSAGE))
    assert result.posts

    spans = exporter.get_finished_spans()
    assert tree(spans) == [
        ("turn traced", None),
        ("chat", "turn traced"),
        ("handoff Triage -> Returns", "turn traced"),
        ("post handoff", "turn traced"),
        ("chat gpt-test", "turn traced"),
        ("execute_tool lookup_order", "turn traced"),
        ("chat gpt-test", "turn traced"),
        ("post reply", "turn traced"),
    ]
    assert len({span.context.trace_id for span in spans if span.context}) == 1
    turn, triage, handoff, _, asked, tool, answered, _ = sorted(
        spans, key=lambda span: span.start_time or 0
    )
    assert turn.attributes is not None and dict(turn.attributes) == {
        "switchboard.workflow": "traced",
        "switchboard.session.key": "test:C1:t1",
        "switchboard.session.id": 1,
        "switchboard.platform": "test",
        "gen_ai.conversation.id": "1",
        "switchboard.turn.outcome": "answered",
    }
    assert triage.kind is SpanKind.CLIENT
    assert triage.attributes is not None and triage.attributes["gen_ai.agent.name"] == "Triage"
    assert asked.attributes is not None and dict(asked.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.agent.name": "Returns",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-2025",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 9,
    }
    assert answered.attributes is not None
    assert answered.attributes["gen_ai.usage.output_tokens"] == 12
    assert handoff.attributes is not None and dict(handoff.attributes) == {
        "switchboard.handoff.source": "Triage",
        "switchboard.handoff.target": "Returns",
        "gen_ai.agent.name": "Triage",
    }
    assert tool.attributes is not None and dict(tool.attributes) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "lookup_order",
        "gen_ai.tool.call.id": "call_lookup",
        "gen_ai.agent.name": "Returns",
        "switchboard.tool.outcome": "ok",
    }
    # No message text anywhere unless BOT_TRACE_CONTENT says so: not the customer's, the
    # model's, a tool's arguments or result, nor a handoff's reason.
    values = json.dumps([dict(span.attributes or {}) for span in spans], default=str)
    for text in ("refund", "4111", "delivered", '"42"', "wants"):
        assert text not in values


async def test_with_trace_content_the_text_is_in_the_attributes(store: Store) -> None:
    caught = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(caught))
    tracing.use(provider, trace_content=True)
    try:
        service = ConversationService(WORKFLOW, script(), store, RecordingPlatform())
        await service.handle(IncomingMessage("test", "C1", "t1", MESSAGE))
    finally:
        tracing.shutdown()
    named = {span.name: dict(span.attributes or {}) for span in caught.get_finished_spans()}
    assert named["turn traced"]["switchboard.message.text"] == MESSAGE
    handoff = named["handoff Triage -> Returns"]
    assert handoff["switchboard.handoff.reason"] == "The customer wants a refund."
    tool = named["execute_tool lookup_order"]
    assert tool["gen_ai.tool.call.arguments"] == '{"order_id": "42"}'
    assert tool["gen_ai.tool.call.result"] == "order 42: delivered on Monday"
    assert (
        named["post reply"]["switchboard.post.text"] == "Order 42 was delivered; I can refund it."
    )
    output = json.loads(named["chat gpt-test"]["gen_ai.output.messages"])
    assert output == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Order 42 was delivered; I can refund it."}],
        }
    ]


async def test_a_failed_model_call_is_an_error_span_with_its_kind(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    model = ScriptedModel([ModelError("the model server did not answer in time")])
    await ConversationService(WORKFLOW, model, store).handle(
        IncomingMessage("test", "C1", "t1", "hello")
    )
    named = {span.name: span for span in exporter.get_finished_spans()}
    chat, turn = named["chat"], named["turn traced"]
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.status.description == "the model server did not answer in time"
    assert chat.attributes is not None and chat.attributes["error.type"] == "invalid_reply"
    assert turn.attributes is not None
    assert turn.attributes["switchboard.turn.outcome"] == "model_error"


async def test_off_no_span_is_made(store: Store) -> None:
    assert tracing.tracer is None
    result = await ConversationService(WORKFLOW, script(), store).handle(
        IncomingMessage("test", "C1", "t1", MESSAGE)
    )
    assert result.posts  # and nothing to catch them: the hooks only check `tracing.tracer`


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "bot"}, ()),  # names the service; sends nothing anywhere
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("otlp",),
        ),
    ],
)
def test_the_otel_variables_say_which_exporters(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert tracing.exporters(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER=jaeger: Switchboard ships"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: Switchboard ships the http/protobuf",
        ),
    ],
)
def test_what_cannot_be_honoured_is_one_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(tracing.TracingError, match=f"^{message}"):
        tracing.exporters(environ)


def test_configured_from_the_environment_the_service_is_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert tracing.configure({"OTEL_TRACES_EXPORTER": "console"}) is True
    try:
        assert tracing.tracer is not None
        with tracing.tracer.start_as_current_span("probe"):
            assert tracing.current_ids() is not None
    finally:
        tracing.shutdown()  # flushes the console exporter, on stderr
    assert tracing.tracer is None and tracing.current_ids() is None
    printed = json.loads(capsys.readouterr().err)
    assert printed["name"] == "probe"
    assert printed["resource"]["attributes"]["service.name"] == "switchboard"
