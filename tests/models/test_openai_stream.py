"""`OpenAIChatModel.stream`: the real openai client against a local server that streams.

Each test reads the stream as the engine does (text deltas, then the whole reply) and asserts
both what arrived and what went over the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from bot.models import ChatMessage, ModelError, ModelReply, ModelRequest, TextDelta, ToolSpec
from bot.models.openai import OpenAIChatModel
from bot.settings import load_settings
from tests.fakes.chat_completions import ChatCompletionsServer, Cut, Fail, Reply, chunks, tokens

SECRET = "sk-test-never-print-me"
LOOKUP = ToolSpec(
    "lookup_order",
    "Look up an order by its number.",
    {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
)
HANDOFF = ToolSpec("handoff_to_Returns", "Returns and refunds.", {"type": "object"})
REQUEST = ModelRequest(
    agent="Clerk",
    messages=(
        ChatMessage("system", "You are Clerk."),
        ChatMessage("user", "Where is order 42?"),
    ),
    tools=(LOOKUP, HANDOFF),
)
STREAM_FIELDS = {"stream", "stream_options"}


@pytest.fixture
async def server() -> AsyncIterator[ChatCompletionsServer]:
    async with ChatCompletionsServer() as running:
        yield running


@pytest.fixture
async def model(server: ChatCompletionsServer) -> AsyncIterator[OpenAIChatModel]:
    opened = model_for(server)
    yield opened
    await opened.aclose()


def model_for(server: ChatCompletionsServer, **extra: str) -> OpenAIChatModel:
    settings = {
        "OPENAI_API_KEY": SECRET,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_MODEL": "test-model",
        "OPENAI_MAX_RETRIES": "1",
        **extra,
    }
    return OpenAIChatModel.from_settings(load_settings(settings, env_file=None))


async def read(
    model: OpenAIChatModel, request: ModelRequest = REQUEST
) -> tuple[list[str], ModelReply]:
    """The text deltas and the final reply, checking that the reply comes once, last."""
    items = [item async for item in model.stream(request)]
    *deltas, last = items
    assert isinstance(last, ModelReply), items
    assert all(isinstance(item, TextDelta) for item in deltas), items
    return [item.text for item in deltas if isinstance(item, TextDelta)], last


async def test_text_arrives_token_by_token_and_the_reply_comes_last_with_usage(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    text = "Order 42 left the warehouse yesterday, tracking to follow."
    server.script = [Reply(text, usage=(321, 12), model="test-model-2026")]
    deltas, reply = await read(model)
    assert deltas == tokens(text) and len(deltas) == 9
    assert "".join(deltas) == reply.text == text
    assert (reply.finish_reason, reply.tool_calls, reply.model) == ("stop", (), "test-model-2026")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (321, 12)
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert len(server.token_times) == 9


async def test_text_is_handed_over_while_the_model_is_still_writing(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.token_delay = 0.1
    server.script = [Reply("one two three four five")]
    seen: list[float] = []
    async for item in model.stream(REQUEST):
        if isinstance(item, TextDelta):
            seen.append(time.monotonic())
    written = server.token_times
    assert len(seen) == len(written) == 5
    assert seen[0] < written[-1] - 0.3  # the first word shown long before the last is written
    assert all(shown >= sent for shown, sent in zip(seen, written, strict=True))


async def test_two_tool_calls_in_pieces_are_assembled_exactly(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    arguments = {"order_id": 42, "note": "a long note, split into several pieces"}
    server.script = [Reply(tool_calls=(("lookup_order", arguments), ("handoff_to_Returns", "{}")))]
    pieces = [
        call
        for _, chunk in chunks({}, server.script[0])
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls", ())
    ]
    assert [call["index"] for call in pieces].count(0) > 3  # the fake does split them
    assert all("id" not in call for call in pieces if "name" not in call.get("function", {}))

    deltas, reply = await read(model)
    assert deltas == [] and reply.text is None and reply.finish_reason == "tool_calls"
    first, second = reply.tool_calls
    assert (first.name, json.loads(first.arguments)) == ("lookup_order", arguments)
    assert first.arguments == json.dumps(arguments)
    assert (second.name, second.arguments) == ("handoff_to_Returns", "{}")
    assert first.id.startswith("call_") and second.id.startswith("call_")
    assert first.id != second.id


async def test_text_then_a_tool_call(server: ChatCompletionsServer, model: OpenAIChatModel) -> None:
    server.script = [
        Reply("Let me look that up.", tool_calls=(("lookup_order", {"order_id": 42}),))
    ]
    deltas, reply = await read(model)
    assert "".join(deltas) == reply.text == "Let me look that up."
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("lookup_order", '{"order_id": 42}')
    ]


async def test_calls_without_ids_get_generated_ones(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.tool_call_ids = False
    server.script = [Reply(tool_calls=(("lookup_order", {"order_id": 1}), ("lookup_order", {})))]
    _, reply = await read(model)
    assert [(c.id, c.arguments) for c in reply.tool_calls] == [
        ("call_0", '{"order_id": 1}'),
        ("call_1", "{}"),
    ]


async def test_a_server_that_refuses_stream_options_is_asked_without_them(
    server: ChatCompletionsServer, model: OpenAIChatModel, caplog: pytest.LogCaptureFixture
) -> None:
    server.reject_stream_options = True
    server.script = [Reply("First answer."), Reply("Second answer.")]
    _, first = await read(model)
    _, second = await read(model)
    assert (first.text, second.text) == ("First answer.", "Second answer.")
    assert first.usage is None
    assert ["stream_options" in body for body in server.requests] == [True, False, False]
    assert all(body["stream"] is True for body in server.requests)
    assert "refused stream_options (HTTP 400)" in caplog.text


async def test_a_bad_request_is_not_taken_for_a_refused_option(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.script = [Fail(400), Fail(400), Reply("Fine now.")]
    with pytest.raises(ModelError, match="HTTP 400"):
        await read(model)
    _, reply = await read(model)
    assert reply.text == "Fine now."
    assert ["stream_options" in body for body in server.requests] == [True, False, True]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Cut(Reply("I will tell you everything about it."), after=3), "broke off"),
        (Cut(Reply("I will tell you everything."), after=2, error_status=500), "reported an error"),
        (Fail(500), "HTTP 500"),
    ],
    ids=["connection-cut", "error-event", "500-before-the-stream"],
)
async def test_a_stream_broken_midway_is_a_model_error(
    server: ChatCompletionsServer, model: OpenAIChatModel, step: Cut | Fail, message: str
) -> None:
    server.script = [step, step]  # the client retries only before a stream starts
    seen: list[str] = []
    with pytest.raises(ModelError, match=message) as raised:
        async for item in model.stream(REQUEST):
            assert isinstance(item, TextDelta), "no reply after a broken stream"
            seen.append(item.text)
    expected = tokens(step.reply.text or "")[: step.after] if isinstance(step, Cut) else []
    assert seen == expected
    assert SECRET not in str(raised.value)


async def test_a_reply_cut_at_the_length_limit_says_so_at_its_end(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.script = [Reply("Part of an ans", finish_reason="length")]
    deltas, reply = await read(model)
    assert "".join(deltas) == "Part of an ans"
    assert reply.text == "Part of an ans …(reply cut short at the model's length limit)"
    assert reply.finish_reason == "length"


async def test_a_streamed_refusal_is_the_reply_text(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.script = [Reply(None, refusal="I can't help with that.")]
    deltas, reply = await read(model)
    assert "".join(deltas) == reply.text == "I can't help with that."


async def test_a_server_that_ignores_stream_gets_the_whole_reply(
    server: ChatCompletionsServer, model: OpenAIChatModel
) -> None:
    server.ignore_stream = True
    server.script = [Reply("All at once.", tool_calls=(("lookup_order", {"order_id": 7}),))]
    deltas, reply = await read(model)
    assert deltas == []
    assert reply.text == "All at once." and reply.tool_calls[0].arguments == '{"order_id": 7}'
    assert reply.usage is not None


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"OPENAI_TEMPERATURE": "0.3", "OPENAI_TOOL_CHOICE": "auto"},
        {"OPENAI_PARALLEL_TOOL_CALLS": "omit"},
    ],
)
async def test_the_streamed_request_is_the_plain_one_plus_the_stream_fields(
    server: ChatCompletionsServer, extra: dict[str, str]
) -> None:
    model = model_for(server, **extra)
    server.respond = lambda body: Reply("ok")
    for request in (REQUEST, ModelRequest("Big", REQUEST.messages, model="big-model")):
        await model.complete(request)
        await read(model, request)
    await model.aclose()
    plain, streamed, plain_big, streamed_big = server.requests
    assert STREAM_FIELDS.isdisjoint(plain)
    assert {k: v for k, v in streamed.items() if k not in STREAM_FIELDS} == plain
    assert {k: v for k, v in streamed_big.items() if k not in STREAM_FIELDS} == plain_big
    assert len(plain["tools"]) == 2 and plain_big["model"] == "big-model"
