"""Calls that need a moderator's approval, through the service and a real SQLite file: the call
waits as a case of its own; approve runs it once and its agent goes on; reject tells the agent;
a pending approval survives a restart; a crash after the click neither loses the call nor runs
it twice; a stale or repeated click changes nothing; only moderators act."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.engine.loader import parse_workflow
from bot.engine.runner import call_key
from bot.engine.transcript import ContinuationPrompt, ToolOutcome
from bot.service import ConversationService, IncomingMessage
from bot.service.platform import Click
from bot.service.turn import scope_of
from bot.store import Store, sqlite_store
from bot.testing import RecordingPlatform, ScriptedModel, call, say

REFUNDS: dict[str, float] = {}  # idempotency key -> amount: what the "payment system" did
RAN: list[str] = []  # every run of the function, keys included
HOLD: dict[str, asyncio.Event] = {}  # a run waits here after its effect (a crash window)


def refund(order_id: str, amount: float, idempotency_key: str | None = None) -> str:
    """Refund an amount on an order."""
    RAN.append(str(idempotency_key))
    REFUNDS.setdefault(str(idempotency_key), amount)
    return f"refunded {amount:.2f} on order {order_id}"


async def slow_refund(order_id: str, amount: float, idempotency_key: str | None = None) -> str:
    """Refund, then wait (the process may be killed before the result is stored)."""
    text = refund(order_id, amount, idempotency_key)
    HOLD.setdefault("ran", asyncio.Event()).set()
    await HOLD.setdefault("refund", asyncio.Event()).wait()
    return text


def large(arguments: dict[str, object]) -> bool:
    amount = arguments["amount"]
    return isinstance(amount, float | int) and amount > 100


WORKFLOW = f"""
start: Returns
agents:
  - name: Returns
    instructions: You handle refunds.
    tools:
      - {{function: {__name__}.refund, approval: moderators, when: {__name__}.large}}
      - {{function: {__name__}.slow_refund, approval: moderators}}
"""
SHOP = parse_workflow(WORKFLOW)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    REFUNDS.clear()
    RAN.clear()
    HOLD.clear()


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("test", "C1", "t1", text, author="ana")


def moderated() -> RecordingPlatform:
    return RecordingPlatform(moderators=("mod-1", "mod-2"))


def asks(amount: float, *after: str, tool: str = "refund") -> ScriptedModel:
    return ScriptedModel(
        [
            call(tool, {"order_id": "1042", "amount": amount}),
            say("A team member must approve this refund; I'll come back to you here."),
            *(say(text) for text in after),
        ]
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "approvals.db"


async def key_of(store: Store, case_id: int) -> str:
    """The key an approved call runs with: its conversation's and its own."""
    case = await store.get_case(case_id)
    assert case is not None and case.call is not None
    session = await store.get_session(case.session_id)
    assert session is not None
    return call_key(scope_of(session), case.call.id)


async def ask(service: ConversationService, tool: str = "refund") -> int:
    result = await service.handle(msg("Please refund 150 for order 1042"))
    (case,) = result.cases
    assert case.kind == "approval" and case.call is not None
    assert (case.call.tool, json.loads(case.call.arguments)) == (
        tool,
        {"order_id": "1042", "amount": 150},
    )
    assert [p.text for p in result.posts if p.kind != "working"] == [
        "This needs a team member's approval; I'll come back to you here.",
        "A team member must approve this refund; I'll come back to you here.",
    ]
    return case.id


async def test_a_small_refund_runs_without_asking(store: Store) -> None:
    model = ScriptedModel([call("refund", {"order_id": "1042", "amount": 20}), say("Done.")])
    service = ConversationService(SHOP, model, store, RecordingPlatform())
    result = await service.handle(msg("refund 20 please"))
    assert result.cases == () and list(REFUNDS.values()) == [20]


async def test_approve_runs_the_call_once_and_the_agent_goes_on(store: Store) -> None:
    platform = moderated()
    model = asks(150, "Your refund of 150 is on its way.")
    service = ConversationService(SHOP, model, store, platform)
    case_id = await ask(service)
    assert RAN == []  # nothing runs before a moderator approves
    waiting = [m.content for m in model.requests[-1].messages if m.role == "tool"]
    assert waiting and "needs a moderator's approval" in waiting[-1]
    card = await service.moderation.card(await store.get_case(case_id))  # type: ignore[arg-type]
    assert card.title == f"Case #{case_id}: Returns asks to run refund (open)"
    assert card.excerpt[0] == 'call: refund(order_id="1042", amount=150)'
    assert card.actions == ("approve", "reject")

    done = await service.click(Click(str(case_id), "approve", "mod-1"))
    assert done.ok
    key = await key_of(store, case_id)
    assert [key] == RAN and {key: 150} == REFUNDS
    said = platform.texts()
    assert said[-2:] == ["A moderator approved this request.", "Your refund of 150 is on its way."]
    note = model.requests[-1].messages[-1].content or ""
    assert "approved your call to refund" in note and "refunded 150.00 on order 1042" in note
    case = await store.get_case(case_id)
    assert case is not None and case.status == "approved" and case.result is not None
    card = await service.moderation.card(case)
    assert card.actions == () and card.excerpt[-1] == "result: refunded 150.00 on order 1042"

    again = await service.click(Click(str(case_id), "approve", "mod-2"))  # a stale click
    assert not again.ok and "already approved by mod-1" in again.message
    assert [await key_of(store, case_id)] == RAN


async def test_reject_tells_the_agent_and_runs_nothing(store: Store) -> None:
    platform = moderated()
    model = asks(150, "I'm sorry, the refund could not be approved.")
    service = ConversationService(SHOP, model, store, platform)
    case_id = await ask(service)
    assert (await service.click(Click(str(case_id), "reject", "mod-1"))).ok
    assert RAN == []
    note = model.requests[-1].messages[-1].content or ""
    assert "rejected your call to refund: it did not run" in note
    said = platform.texts()
    assert said[-2:] == [
        "A moderator rejected this request.",
        "I'm sorry, the refund could not be approved.",
    ]
    late = await service.click(Click(str(case_id), "approve", "mod-2"))
    assert not late.ok and RAN == []


async def test_only_moderators_act_and_a_repeated_click_counts_once(store: Store) -> None:
    platform = moderated()
    service = ConversationService(SHOP, asks(150, "Refunded."), store, platform)
    case_id = await ask(service)
    refused = await service.click(Click(str(case_id), "approve", "ana"))
    assert not refused.ok and RAN == []
    case = await store.get_case(case_id)
    assert case is not None and case.status == "open"
    first = await service.click(Click(str(case_id), "approve", "mod-1", id="click-1"))
    repeat = await service.click(Click(str(case_id), "approve", "mod-1", id="click-1"))
    assert first.ok and not repeat.ok and [await key_of(store, case_id)] == RAN
    other = await service.click(Click(str(case_id), "takeover", "mod-1"))
    assert not other.ok  # an approval is approved or rejected, nothing else


async def test_a_pending_approval_survives_a_restart(db: Path) -> None:
    async with sqlite_store(db) as store:
        service = ConversationService(SHOP, asks(150), store, moderated())
        case_id = await ask(service)
        await service.stop(1)
    platform = moderated()
    model = ScriptedModel([say("The refund went through.")])
    async with sqlite_store(db) as store:
        service = ConversationService(SHOP, model, store, platform)
        pending = await store.cases(status="open")
        assert [c.id for c in pending] == [case_id]
        assert (await service.click(Click(str(case_id), "approve", "mod-1"))).ok
        assert platform.texts()[-1] == "The refund went through."
        assert [await key_of(store, case_id)] == RAN


async def test_a_crash_after_the_click_runs_the_call_once(db: Path) -> None:
    """Killed while the approved call runs (its effect done, its result not stored): the
    restart runs it again with the same key, and the function does its work once."""
    async with sqlite_store(db) as store:
        service = ConversationService(SHOP, asks(150, tool="slow_refund"), store, moderated())
        case_id = await ask(service, "slow_refund")
        click = asyncio.create_task(service.click(Click(str(case_id), "approve", "mod-1")))
        await asyncio.wait_for(HOLD.setdefault("ran", asyncio.Event()).wait(), 5)
        click.cancel()  # the process dies here: the effect is done, nothing else is stored
        await asyncio.gather(click, return_exceptions=True)
        await service.stop(0.1)
    HOLD["refund"].set()
    platform = moderated()
    async with sqlite_store(db) as store:
        case = await store.get_case(case_id)
        assert case is not None and case.status == "approved" and case.result is None
        service = ConversationService(SHOP, ScriptedModel([say("Refunded.")]), store, platform)
        await service.sweep()
        for _ in range(200):
            if platform.texts()[-1:] == ["Refunded."]:
                break
            await asyncio.sleep(0.02)
        await service.stop(1)
        case = await store.get_case(case_id)
        entries = await store.entries(case.session_id if case else 0)
    assert len(RAN) == 2 and RAN[0] == RAN[1]  # run again, with the same key ...
    assert {RAN[0]: 150} == REFUNDS  # ... so the refund was made once
    assert case is not None and case.result is not None
    notes = [e.item for e in entries if isinstance(e.item, ContinuationPrompt)]
    assert len(notes) == 1  # the agent was told once
    waiting = [e.item for e in entries if isinstance(e.item, ToolOutcome)]
    assert len(waiting) == 1


async def test_nothing_runs_once_the_conversation_is_closed(store: Store) -> None:
    platform = moderated()
    service = ConversationService(SHOP, asks(150), store, platform)
    case_id = await ask(service)
    await service.handle(msg("end"))
    case = await store.get_case(case_id)
    assert case is not None and (await service.moderation.card(case)).actions == ()
    late = await service.click(Click(str(case_id), "approve", "mod-1"))
    assert not late.ok and "the conversation is closed" in late.message and RAN == []


AWAY = parse_workflow(
    f"""
start: Triage
return_to_previous: false
agents:
  - {{name: Triage, instructions: Route.}}
  - name: Returns
    instructions: You handle refunds.
    tools: [{{function: {__name__}.refund, approval: moderators}}]
handoffs: [{{from: Triage, to: Returns}}]
"""
)


async def test_the_verdict_goes_to_the_agent_that_made_the_call(store: Store) -> None:
    model = ScriptedModel(
        [
            call("handoff_to_Returns"),
            call("refund", {"order_id": "1042", "amount": 150}),
            say("It waits for approval."),
            say("Refunded."),
        ]
    )
    service = ConversationService(AWAY, model, store, moderated())
    (case,) = (await service.handle(msg("refund 150 on 1042"))).cases
    assert (await service.click(Click(str(case.id), "approve", "mod-1"))).ok
    assert model.requests[-1].agent == "Returns"
    assert "approved your call to refund" in (model.requests[-1].messages[-1].content or "")


PLAIN = parse_workflow(
    f"""
start: Returns
agents:
  - name: Returns
    instructions: You handle refunds.
    tools: [{__name__}.slow_refund]
"""
)


async def test_a_crash_while_a_tool_runs_runs_it_again_with_the_same_key(db: Path) -> None:
    """No approval here: the reply that asks for the call is stored before the call runs, so
    the restart runs that same call again, with the same key, and the refund is made once."""
    async with sqlite_store(db) as store:
        model = ScriptedModel([call("slow_refund", {"order_id": "1042", "amount": 50})])
        service = ConversationService(PLAIN, model, store, moderated())
        turn = asyncio.create_task(service.handle(msg("refund 50 please")))
        await asyncio.wait_for(HOLD.setdefault("ran", asyncio.Event()).wait(), 5)
        turn.cancel()  # the process dies while the tool runs
        await asyncio.gather(turn, return_exceptions=True)
        await service.stop(0.1)
    HOLD["refund"].set()
    platform = moderated()
    async with sqlite_store(db) as store:
        model = ScriptedModel([say("Refunded 50.")])
        service = ConversationService(PLAIN, model, store, platform)
        await service.sweep()
        for _ in range(200):
            if platform.texts()[-1:] == ["Refunded 50."]:
                break
            await asyncio.sleep(0.02)
        await service.stop(1)
    assert len(RAN) == 2 and RAN[0] == RAN[1] and list(REFUNDS.values()) == [50]
    assert len(model.requests) == 1  # the stored call was not asked of the model again


async def test_the_same_call_is_not_asked_for_twice_while_it_waits(store: Store) -> None:
    model = ScriptedModel(
        [
            call("refund", {"order_id": "1042", "amount": 150}),
            say("A team member must approve this refund; I'll come back to you here."),
            call("refund", {"order_id": "1042", "amount": 150}),
            say("Still waiting."),
        ]
    )
    service = ConversationService(SHOP, model, store, moderated())
    case_id = await ask(service)
    again = await service.handle(msg("and? refund it now"))
    assert again.cases == ()  # no second case
    told = [m.content or "" for m in model.requests[-1].messages if m.role == "tool"]
    assert "already waits for a moderator's approval" in told[-1]
    assert [c.id for c in await store.cases(status="open")] == [case_id]
