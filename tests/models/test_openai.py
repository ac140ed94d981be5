"""`OpenAIChatModel`: the real openai client against a local Chat Completions server.

Every test goes through `ConversationService` and a real SQLite file, then asserts what went over
the wire: the request bodies the server recorded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Agent, HandoffBuilder, UserTurn, Workflow
from bot.engine.loader import load_workflow
from bot.models.openai import OpenAIChatModel
from bot.models.select import describe, make_model, require_real_model
from bot.service import ConversationService, IncomingMessage, TurnResult, WindowBudget
from bot.settings import Settings, SettingsError, load_settings
from bot.store import SessionKey, Store, sqlite_store
from tests.fakes.chat_completions import ChatCompletionsServer, Delay, Fail, Reply
from tests.helpers import append

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
SECRET = "sk-test-never-print-me"


def settings_for(server: ChatCompletionsServer, **extra: str) -> Settings:
    return load_settings(
        {
            "OPENAI_API_KEY": SECRET,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_MODEL": "test-model",
            "OPENAI_MAX_RETRIES": "2",
            **extra,
        },
        env_file=None,
    )


_open_models: list[OpenAIChatModel] = []


@pytest.fixture
async def server() -> AsyncIterator[ChatCompletionsServer]:
    async with ChatCompletionsServer() as running:
        yield running
        while _open_models:
            await _open_models.pop().aclose()


def service_for(
    server: ChatCompletionsServer,
    store: Store,
    workflow: Workflow = SHOP,
    window: WindowBudget | None = None,
    **extra: str,
) -> ConversationService:
    model = make_model(settings_for(server, **extra))
    assert isinstance(model, OpenAIChatModel)
    _open_models.append(model)
    return ConversationService(workflow, model, store, window=window)


async def say(service: ConversationService, text: str, thread: str = "t1") -> TurnResult:
    return await service.handle(IncomingMessage("test", "C1", thread, text))


def assert_every_call_answered(body: dict[str, Any]) -> None:
    """In a request, each assistant tool call is followed by its tool message, and no orphans."""
    pending: set[str] = set()
    for message in body["messages"]:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, message
            pending.discard(message["tool_call_id"])
        else:
            assert not pending, f"unanswered calls {pending} before {message}"
            pending = {call["id"] for call in message.get("tool_calls") or []}
    assert not pending


def tools_offered(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["function"]["name"], t["function"]["description"]) for t in body.get("tools", [])]


async def test_the_canonical_conversation_on_the_wire(
    server: ChatCompletionsServer, store: Store
) -> None:
    server.script = [
        Reply(tool_calls=(("handoff_to_Returns", {"reason": "Return request."}),)),
        Reply("What is your order number?"),
        Reply(tool_calls=(("handoff_to_Fraud", {"reason": "Refund without return."}),)),
        Reply("A colleague will review this."),
        Reply("Thanks, the photos are attached to your case."),
    ]
    service = service_for(server, store)
    first = await say(service, "I want to return my order")
    assert [(p.kind, p.persona.name) for p in first.posts] == [
        ("handoff", "Returns"),
        ("reply", "Returns"),
    ]
    await say(service, "It never arrived, just refund me")
    last = await say(service, "Here are photos")
    assert [(p.persona.name, p.text) for p in last.posts] == [
        ("Fraud Review", "Thanks, the photos are attached to your case.")
    ]

    bodies = server.requests
    assert [b["messages"][0]["content"].split(",")[0] for b in bodies] == [
        "You are Triage",
        "You are Returns",
        "You are Returns",
        "You are Fraud",
        "You are Fraud",
    ]
    # Exactly the current agent's handoff tools, named and described from the edges.
    assert tools_offered(bodies[0]) == [
        ("handoff_to_Returns", SHOP.agents["Returns"].description),
        ("handoff_to_Orders", SHOP.agents["Orders"].description),
    ]
    assert [name for name, _ in tools_offered(bodies[1])] == [
        "handoff_to_Orders",
        "handoff_to_Triage",
        "handoff_to_Fraud",
        "lookup_order",  # the demo shop's
        "start_return",
        "issue_refund",
    ]
    assert ("handoff_to_Fraud", SHOP.handoffs("Returns")[2].description) in tools_offered(bodies[1])
    assert SHOP.handoffs("Returns")[2].description.startswith("Suspected return fraud or abuse:")
    assert "tools" not in bodies[3]  # Fraud is terminal: nothing to call
    assert all(b.get("parallel_tool_calls") is False for b in bodies if "tools" in b)
    assert all(b["model"] == "test-model" for b in bodies)
    # Other agents' replies are named by speaker, with no label in their text; the handoff
    # reaches its target as a system note; their tool internals are not shown.
    fraud_view = bodies[3]["messages"]
    assert {
        "role": "assistant",
        "content": "What is your order number?",
        "name": "Returns",
    } in fraud_view
    assert fraud_view[-1] == {"role": "user", "content": "It never arrived, just refund me"}
    assert fraud_view[0]["content"].endswith(
        "Returns has just handed this conversation to you (reason: Refund without return.). "
        "Answer the customer's last message yourself."
    )
    assert not any(m["role"] == "tool" or m.get("tool_calls") for m in fraud_view)
    for body in bodies:  # a shape every server handles, nothing a model would imitate
        assert body["messages"][-1]["role"] != "assistant"
        contents = [m["content"] or "" for m in body["messages"]]
        assert not any(re.match(r"\s*\[\w+\]", text) for text in contents)
        assert "handoff_to_" not in body["messages"][0]["content"]
    for body in bodies:
        assert_every_call_answered(body)
    # Usage is stored per model call and totalled on the session.
    session = last.session
    assert session is not None and session.model_calls == 5
    assert (session.prompt_tokens, session.completion_tokens) == (500, 50)
    calls = await store.model_calls(session.id)
    assert [c.usage.agent for c in calls] == ["Triage", "Returns", "Returns", "Fraud", "Fraud"]
    assert {c.usage.model for c in calls} == {"test-model"}


async def test_two_handoffs_from_a_server_that_ignores_parallel_tool_calls(
    server: ChatCompletionsServer, db_path: Path
) -> None:
    server.script = [
        Reply(tool_calls=(("handoff_to_Orders", {}), ("handoff_to_Returns", {}))),
        Reply("Orders here."),
        Reply("Triage again."),
    ]
    async with sqlite_store(db_path) as store:
        no_return = HandoffBuilder(participants=list(SHOP.agents.values()), name="shop")
        no_return.with_start_agent("Triage").add_handoff("Triage", ["Returns", "Orders"])
        workflow = no_return.enable_return_to_previous(False).build()
        service = service_for(server, store, workflow)
        result = await say(service, "parcel or refund?")
        assert [p.persona.name for p in result.posts] == ["Orders", "Orders"]
        await say(service, "hello?")
    triage_again = server.requests[2]["messages"]
    results = [m["content"] for m in triage_again if m["role"] == "tool"]
    assert results[0] == "Handed off to Orders."
    assert results[1].startswith("Error: only one handoff per reply")
    assert_every_call_answered(server.requests[2])


def lookup_order(order_id: int) -> str:
    """Look up an order by its number."""
    return f"Order {order_id}: shipped yesterday."


CLERK = Agent("Clerk", "Answer order questions.", tools=(lookup_order,))
DESK = HandoffBuilder(participants=[CLERK], name="desk").with_start_agent(CLERK).build()


@pytest.mark.parametrize(
    ("arguments", "result"),
    [
        ({"order_id": 42}, "Order 42: shipped yesterday."),
        ('{"order_id": 42', "Error: arguments are not valid JSON"),
        ({"order": "x"}, "Error: invalid arguments for lookup_order: order_id: Field required"),
    ],
)
async def test_function_tools_and_malformed_arguments(
    server: ChatCompletionsServer, store: Store, arguments: object, result: str
) -> None:
    server.script = [Reply(tool_calls=(("lookup_order", arguments),)), Reply("Here you go.")]
    reply = await say(service_for(server, store, DESK), "where is 42?")
    assert [p.text for p in reply.posts] == ["Here you go."]
    second = server.requests[1]
    assert second["tools"][0]["function"]["parameters"]["required"] == ["order_id"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"].startswith(result)
    assert_every_call_answered(second)


async def test_a_call_to_an_unknown_tool_is_answered_with_an_error(
    server: ChatCompletionsServer, store: Store
) -> None:
    server.script = [Reply(tool_calls=(("delete_everything", {}),)), Reply("Sorry.")]
    await say(service_for(server, store, DESK), "hi")
    assert server.requests[1]["messages"][-1]["content"] == (
        "Error: there is no tool named 'delete_everything'. Available tools: lookup_order."
    )


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        (Reply(None), "notice", "I have no answer to that"),
        (Reply("", finish_reason="stop"), "notice", "I have no answer to that"),
        (
            Reply("Part of an ans", finish_reason="length"),
            "reply",
            "Part of an ans …(reply cut short at the model's length limit)",
        ),
        (Reply(None, refusal="I can't help with that."), "reply", "I can't help with that."),
    ],
)
async def test_odd_replies_get_an_honest_answer(
    server: ChatCompletionsServer, store: Store, reply: Reply, kind: str, text: str
) -> None:
    server.script = [reply]
    result = await say(service_for(server, store, DESK), "hi")
    assert [(p.kind) for p in result.posts] == [kind]
    assert text in result.posts[0].text


async def test_429_and_5xx_are_retried_by_the_client(
    server: ChatCompletionsServer, store: Store
) -> None:
    server.script = [Fail(429), Fail(503), Reply("Made it.")]
    result = await say(service_for(server, store, DESK), "hi")
    assert [p.text for p in result.posts] == ["Made it."]
    assert len(server.requests) == 3


async def test_persistent_failures_keep_the_message_and_the_next_one_continues(
    server: ChatCompletionsServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [Fail(500), Fail(500), Fail(500), Reply("Back now. About your parcel...")]
    service = service_for(server, store, DESK)
    failed = await say(service, "where is my parcel?")
    assert [p.kind for p in failed.posts] == ["notice"]
    assert "Your message is saved" in failed.posts[0].text
    assert len(server.requests) == 3  # one try and two retries

    recovered = await say(service, "hello?")
    assert recovered.posts[0].text == "Back now. About your parcel..."
    users = [m["content"] for m in server.requests[3]["messages"] if m["role"] == "user"]
    assert users == ["where is my parcel?", "hello?"]
    assert SECRET not in caplog.text


async def test_a_timeout_is_an_honest_notice(server: ChatCompletionsServer, store: Store) -> None:
    server.script = [Delay(0.6), Reply("On time.")]
    service = service_for(server, store, DESK, OPENAI_TIMEOUT="0.2", OPENAI_MAX_RETRIES="0")
    late = await say(service, "hi")
    assert "couldn't reach the language model" in late.posts[0].text
    assert (await say(service, "again")).posts[0].text == "On time."


async def test_a_rejected_key_never_shows_the_secret(
    server: ChatCompletionsServer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [Fail(401)]
    result = await say(service_for(server, store, DESK), "hi")
    assert result.posts[0].kind == "notice"
    assert server.headers[0]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in caplog.text
    assert "HTTP 401" in caplog.text


async def test_per_agent_model_and_optional_fields(
    server: ChatCompletionsServer, store: Store
) -> None:
    big = Agent("Big", "Think hard.", model="big-model")
    workflow = HandoffBuilder(participants=[big, CLERK]).with_start_agent(big).build()
    server.script = [Reply("Deep thought.", model="big-model-2026")]
    service = service_for(
        server, store, workflow, OPENAI_PARALLEL_TOOL_CALLS="omit", OPENAI_TEMPERATURE="0.2"
    )
    result = await say(service, "hi")
    body = server.requests[0]
    assert body["model"] == "big-model" and body["temperature"] == 0.2
    assert "parallel_tool_calls" not in body and "tool_choice" not in body
    assert result.session is not None
    calls = await store.model_calls(result.session.id)
    assert calls[0].usage.model == "big-model-2026"


async def test_the_window_budget_holds_on_a_1000_message_thread(
    server: ChatCompletionsServer, store: Store
) -> None:
    server.respond = lambda body: Reply("ok")
    service = service_for(server, store, DESK, window=WindowBudget(items=200, tokens=3000))
    await say(service, "My first message: order 42 is broken")
    session = await store.find_session(SessionKey("test", "C1", "t1"))
    assert session is not None
    from bot.engine import AgentReply

    await append(
        store,
        session.id,
        [
            UserTurn(f"message {i} " + "words " * 20) if i % 2 else AgentReply("Clerk", f"r{i}")
            for i in range(1000)
        ],
    )
    await say(service, "and the latest one")
    messages = server.requests[-1]["messages"]
    assert messages[1]["content"] == "My first message: order 42 is broken"
    assert messages[-1]["content"] == "and the latest one"
    assert sum(len(m["content"] or "") for m in messages[1:]) // 4 <= 3000
    assert 20 < len(messages) < 200


def test_model_selection() -> None:
    offline = load_settings({}, env_file=None)
    assert type(make_model(offline)).__name__ == "OfflineModel"
    with pytest.raises(SettingsError, match="`python -m bot slack` needs a real model"):
        require_real_model(offline, "slack")
    for env in ({"OPENAI_API_KEY": SECRET}, {"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}):
        settings = load_settings(env, env_file=None)
        require_real_model(settings, "discord")
        model = make_model(settings)
        assert isinstance(model, OpenAIChatModel)
        assert SECRET not in describe(model, settings)
        asyncio.run(model.aclose())
