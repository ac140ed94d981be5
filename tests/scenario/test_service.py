"""Whole conversations through `ConversationService`: scripted model, real SQLite file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bot.engine import Agent, AgentReply, HandoffBuilder, Notice, UserTurn
from bot.engine.loader import load_workflow
from bot.models import ModelReply, ModelRequest
from bot.service import ConversationService, IncomingMessage, WindowBudget
from bot.service.rules import ENDED_TEXT, NOTHING_TO_END_TEXT
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import RecordingPlatform, ScriptedModel, call, say
from tests.helpers import append, open_session

ECOMMERCE = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")


def msg(
    text: str, thread: str = "t1", event: str | None = None, **extra: object
) -> IncomingMessage:
    return IncomingMessage("test", "C1", thread, text, event_id=event, **extra)  # type: ignore[arg-type]


def canonical() -> ScriptedModel:
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "The customer wants to return an order."}),
            say("I can help with that. What is your order number?"),
            say("Thanks! Order 42 is eligible; I've emailed you a return label."),
        ]
    )


async def test_the_canonical_conversation(store: Store) -> None:
    model = canonical()
    service = ConversationService(ECOMMERCE, model, store)

    first = await service.handle(msg("I want to return my order", event="e1"))
    assert [(p.kind, p.persona.name, p.text) for p in first.posts] == [
        (
            "handoff",
            "Returns",
            "Triage handed you to Returns: The customer wants to return an order.",
        ),
        ("reply", "Returns", "I can help with that. What is your order number?"),
    ]
    second = await service.handle(msg("Order 42", event="e2"))
    assert [(p.persona.name, p.persona.emoji) for p in second.posts] == [("Returns", ":package:")]
    assert model.agents_called() == ["Triage", "Returns", "Returns"]

    session = await store.find_session(SessionKey("test", "C1", "t1"))
    assert session is not None
    assert (session.active_agent, session.status, session.item_count) == ("Returns", "open", 7)
    kinds = [entry.item.kind for entry in await store.entries(session.id)]
    assert kinds == ["user", "agent", "tool", "handoff", "agent", "user", "agent"]


async def test_posts_go_to_the_platform_as_they_happen(store: Store) -> None:
    platform = RecordingPlatform()
    result = await ConversationService(ECOMMERCE, canonical(), store, platform).handle(
        msg("return please")
    )
    assert [post for _, post in platform.posts] == list(result.posts) and len(result.posts) == 2
    assert {key for key, _ in platform.posts} == {SessionKey("test", "C1", "t1")}


async def test_a_duplicate_event_is_answered_once(store: Store) -> None:
    model = ScriptedModel([say("Hello!")])
    service = ConversationService(ECOMMERCE, model, store)
    results = await asyncio.gather(
        service.handle(msg("hi", event="Ev1")), service.handle(msg("hi", event="Ev1"))
    )
    assert sorted(r.duplicate for r in results) == [False, True]
    again = await service.handle(msg("hi", event="Ev1"))
    assert again.duplicate and again.posts == ()
    assert model.calls == 1


async def test_three_messages_to_one_thread_are_answered_in_order(store: Store) -> None:
    def echo(request: ModelRequest) -> ModelReply:
        users = [m.content for m in request.messages if m.role == "user"]
        return ModelReply(text=f"answer to {users[-1]} after {len(users) - 1} earlier")

    service = ConversationService(ECOMMERCE, ScriptedModel(respond=echo, latency=0.02), store)
    results = await asyncio.gather(
        *(service.handle(msg(f"m{i}", event=f"e{i}")) for i in (1, 2, 3))
    )
    assert [r.posts[0].text for r in results] == [
        "answer to m1 after 0 earlier",
        "answer to m2 after 1 earlier",
        "answer to m3 after 2 earlier",
    ]
    session = results[-1].session
    assert session is not None
    users = [e.item.text for e in await store.entries(session.id) if isinstance(e.item, UserTurn)]
    assert users == ["m1", "m2", "m3"]


async def test_two_threads_interleave_without_cross_talk(store: Store) -> None:
    def by_thread(request: ModelRequest) -> ModelReply:
        users = [m.content for m in request.messages if m.role == "user"]
        return ModelReply(text="|".join(u or "" for u in users))

    model = ScriptedModel(respond=by_thread, latency=0.01)
    service = ConversationService(ECOMMERCE, model, store)
    order = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3")]
    results = await asyncio.gather(*(service.handle(msg(t, thread)) for thread, t in order))
    texts = {t: r.posts[0].text for (_, t), r in zip(order, results, strict=True)}
    assert texts == {"a1": "a1", "b1": "b1", "a2": "a1|a2", "b2": "b1|b2", "a3": "a1|a2|a3"}
    assert len(service.threads.lanes) == 0 and service.threads.busy == 0  # dropped once idle


async def test_different_threads_run_concurrently(store: Store) -> None:
    in_flight = peak = 0
    release = asyncio.Event()

    async def slow(request: ModelRequest) -> ModelReply:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak == 20:
            release.set()
        await asyncio.wait_for(release.wait(), timeout=5)
        in_flight -= 1
        return say("ok")

    service = ConversationService(ECOMMERCE, ScriptedModel(respond=slow), store)
    await asyncio.gather(*(service.handle(msg("hi", f"t{i}")) for i in range(20)))
    assert peak == 20  # every thread's model call was in flight at once


async def test_end_closes_and_only_a_mention_starts_afresh(store: Store) -> None:
    model = ScriptedModel(respond=lambda r: say("hello"))
    service = ConversationService(ECOMMERCE, model, store)
    first = await service.handle(msg("hi"))
    ended = await service.handle(msg("end", event="e-end", author="ana"))
    assert ended.session is not None and ended.session.status == "closed"
    assert [(p.kind, p.text) for p in ended.posts] == [("notice", ENDED_TEXT)]
    again = await service.handle(msg("End!", mentioned=True))
    assert again.ignored and [p.text for p in again.posts] == [NOTHING_TO_END_TEXT]

    ignored = await service.handle(msg("anyone?", mentioned=False))
    assert ignored.ignored and ignored.posts == ()
    assert not await service.owns(SessionKey("test", "C1", "t1"))
    fresh = await service.handle(msg("new question", mentioned=True))
    assert fresh.session is not None and first.session is not None
    assert fresh.session.id != first.session.id and fresh.session.status == "open"
    assert await service.owns(SessionKey("test", "C1", "t1"))
    assert model.calls == 2  # "end" never reached the model


@pytest.mark.parametrize("repeat", ["paired event", "retry after it"])
async def test_a_second_copy_of_end_is_answered_once_and_opens_nothing(
    store: Store, repeat: str
) -> None:
    """Slack delivers "@bot end" as `app_mention` and `message` (one `channel:ts`), and may retry
    it: whichever copy comes second is a duplicate, never a new conversation about "end"."""
    model = ScriptedModel(respond=lambda r: say("hello"))
    platform = RecordingPlatform()
    service = ConversationService(ECOMMERCE, model, store, platform)
    await service.handle(msg("hi", event="C1:1"))
    copies = [msg("end", event="C1:2"), msg("end", event="C1:2", mentioned=False)]
    if repeat == "retry after it":
        copies.reverse()
    results = [await service.handle(copy) for copy in copies]
    assert [r.duplicate for r in results] == [False, True]
    assert platform.texts("notice") == [ENDED_TEXT]
    sessions = await store.find_thread("t1")
    assert [s.status for s in sessions] == ["closed"]  # no new conversation was opened
    assert model.calls == 1


async def test_unmentioned_messages_in_unknown_threads_are_ignored(store: Store) -> None:
    model = ScriptedModel()
    result = await ConversationService(ECOMMERCE, model, store).handle(
        msg("chatter", "elsewhere", mentioned=False)
    )
    assert result.ignored and model.calls == 0
    assert await store.find_session(SessionKey("test", "C1", "elsewhere")) is None


async def test_termination_condition_closes_the_session(db_path: Path) -> None:
    workflow = load_workflow(Path(__file__).parents[2] / "workflows" / "helpdesk.yaml")
    from bot.engine import HandoffBuilder

    closing = (
        HandoffBuilder(participants=list(workflow.agents.values()), name="helpdesk")
        .with_start_agent("Triage")
        .add_handoff("Triage", ["Billing", "Tech"])
        .with_termination_condition(
            lambda items: any(isinstance(i, UserTurn) and "bye" in i.text for i in items)
        )
        .build()
    )
    async with sqlite_store(db_path) as store:
        service = ConversationService(closing, ScriptedModel([say("Goodbye!")]), store)
        result = await service.handle(msg("thanks, bye"))
        assert [p.kind for p in result.posts] == ["reply", "notice"]
        assert result.session is not None and result.session.status == "closed"


async def test_a_crash_mid_turn_leaves_a_consistent_session(store: Store) -> None:
    def explode(request: ModelRequest) -> ModelReply:
        raise RuntimeError("bug in a plugin")

    model = ScriptedModel([call("handoff_to_Returns", {})], respond=explode)
    service = ConversationService(ECOMMERCE, model, store)
    result = await service.handle(msg("return it"))
    assert [(p.kind, p.persona.name) for p in result.posts] == [
        ("handoff", "Returns"),
        ("notice", "Returns"),
    ]
    assert "something went wrong on my side" in result.posts[-1].text
    assert result.session is not None and result.session.active_agent == "Returns"
    items = [e.item for e in await store.entries(result.session.id)]
    assert [i.kind for i in items] == ["user", "agent", "tool", "handoff", "notice"]

    recovered = ConversationService(ECOMMERCE, ScriptedModel([say("Back again.")]), store)
    after = await recovered.handle(msg("hello?"))
    assert after.posts[0].text == "Back again."


async def test_a_model_failure_keeps_the_message_and_the_next_one_continues(
    store: Store,
) -> None:
    from bot.models import ModelError

    model = ScriptedModel([ModelError("HTTP 503"), say("Sorry for the wait, how can I help?")])
    service = ConversationService(ECOMMERCE, model, store)
    failed = await service.handle(msg("hello"))
    assert failed.posts[0].kind == "notice" and "Your message is saved" in failed.posts[0].text
    ok = await service.handle(msg("still there?"))
    assert ok.posts[0].text == "Sorry for the wait, how can I help?"
    users = [m.content for m in model.requests[1].messages if m.role == "user"]
    assert users == ["hello", "still there?"]


async def test_long_threads_load_only_a_bounded_window(store: Store) -> None:
    model = ScriptedModel(respond=lambda r: say("ok"))
    service = ConversationService(ECOMMERCE, model, store, window=WindowBudget(50, 2_000))
    await service.handle(msg("first message: my order 42 is broken"))
    session = await store.find_session(SessionKey("test", "C1", "t1"))
    assert session is not None
    filler = [
        item
        for i in range(500)
        for item in (UserTurn(f"question {i} " + "x" * 80), AgentReply("Triage", f"reply {i}"))
    ]
    await append(store, session.id, filler)
    await service.handle(msg("latest"))

    request = model.requests[-1]
    contents = [m.content or "" for m in request.messages]
    assert len(request.messages) <= 52
    assert contents[1] == "first message: my order 42 is broken"
    assert contents[-1] == "latest"
    assert sum(len(c) for c in contents[1:]) // 4 <= 2_000 + 200


async def test_unknown_active_agent_falls_back_to_the_start_agent(store: Store) -> None:
    session = await open_session(store, SessionKey("test", "C1", "t1"), "shop", "Retired")
    await append(store, session.id, [UserTurn("old"), Notice("old")])
    model = ScriptedModel([say("Triage here.")])
    await ConversationService(ECOMMERCE, model, store).handle(msg("hi"))
    assert model.agents_called() == ["Triage"]


@pytest.mark.parametrize("hidden", [True, False])
async def test_handoff_lines_can_be_hidden(store: Store, hidden: bool) -> None:
    service = ConversationService(ECOMMERCE, canonical(), store, show_handoffs=not hidden)
    result = await service.handle(msg("return please"))
    assert ("handoff" in [p.kind for p in result.posts]) is not hidden


async def test_a_blocking_tool_does_not_hold_up_other_threads(store: Store) -> None:
    """A sync tool runs in a worker thread: while one thread waits on it, another is answered."""
    release = threading.Event()

    def lookup_order(order_id: int) -> str:
        """Look up an order (a blocking call, as many real clients make)."""
        release.wait(10)
        return f"order {order_id}: shipped"

    returns = Agent("Returns", "Help with orders.", tools=(lookup_order,))
    workflow = HandoffBuilder(participants=[returns]).with_start_agent(returns).build()

    def respond(request: ModelRequest) -> ModelReply:
        last = request.messages[-1]
        if last.role == "tool":
            return say(f"Found it: {last.content}.")
        if "order" in (last.content or ""):
            return call("lookup_order", {"order_id": 42})
        return say("Hello!")

    service = ConversationService(workflow, ScriptedModel(respond=respond), store)
    slow = asyncio.create_task(service.handle(msg("where is order 42?", "t-slow")))
    await asyncio.sleep(0.05)
    other = await asyncio.wait_for(service.handle(msg("hi", "t-other")), timeout=5)
    assert other.posts[0].text == "Hello!" and not slow.done()
    release.set()
    assert (await slow).posts[-1].text == "Found it: order 42: shipped."
