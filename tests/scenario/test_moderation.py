"""Review cases through the service and a real SQLite file: open, decide, take over, close."""

from __future__ import annotations

from pathlib import Path

from bot.engine import UserTurn
from bot.engine.loader import load_workflow
from bot.engine.transcript import ModeratorMessage
from bot.service import ConversationService, IncomingMessage
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import ScriptedModel, call, say

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
KEY = SessionKey("test", "C1", "t1")


def msg(text: str, author: str = "ana") -> IncomingMessage:
    return IncomingMessage("test", "C1", "t1", text, author=author)


def escalating(*after: str) -> ScriptedModel:
    return ScriptedModel(
        [
            call("handoff_to_Returns", {"reason": "Return."}),
            call("handoff_to_Fraud", {"reason": "Third refund claim this month."}),
            say("A colleague will review this; can you send photos?"),
            *(say(text) for text in after),
        ]
    )


async def escalate(service: ConversationService) -> int:
    result = await service.handle(msg("Refund me, it never arrived"))
    assert [case.reason for case in result.cases] == ["Third refund claim this month."]
    return result.cases[0].id


async def test_escalation_opens_one_case_with_the_reason(store: Store) -> None:
    service = ConversationService(SHOP, escalating("Thanks for the photos."), store)
    case_id = await escalate(service)
    case = await store.get_case(case_id)
    assert case is not None
    assert (case.key, case.agent, case.status, case.moderator) == (KEY, "Fraud", "open", None)
    card = await service.moderation.card(case)
    assert card.title == f"Case #{case_id}: Fraud review (open)"
    assert card.excerpt == (
        "user: Refund me, it never arrived",
        "Fraud: A colleague will review this; can you send photos?",
    )
    # The review agent keeps talking with the user; no second case for the same escalation.
    follow_up = await service.handle(msg("Here are the photos"))
    assert follow_up.posts[0].text == "Thanks for the photos." and follow_up.cases == ()
    assert len(await store.cases()) == 1


async def test_approve_is_recorded_announced_and_seen_by_the_agent(store: Store) -> None:
    model = escalating("Good news: your refund is approved.")
    service = ConversationService(SHOP, model, store)
    moderation = service.moderation
    case_id = await escalate(service)

    result = await moderation.act(case_id, "approve", "mod-1")
    assert result.ok and result.case is not None and result.case.status == "approved"
    assert [(p.persona.name, p.text) for p in result.posts] == [
        ("Moderator", "A moderator approved this request.")
    ]
    actions = await store.case_actions(case_id)
    assert [(a.action, a.actor) for a in actions] == [("approve", "mod-1")]

    stale = await moderation.act(case_id, "approve", "mod-2")
    assert not stale.ok and stale.posts == ()
    assert stale.message == f"Case #{case_id} was already approved by mod-1; nothing changed."
    assert len(await store.case_actions(case_id)) == 1

    await service.handle(msg("So?"))
    fraud_view = [m.content for m in model.requests[-1].messages]
    assert (
        "A moderator (a person on the support team) wrote: The moderator approved the request."
        in fraud_view
    )


async def test_take_over_silences_the_bot_and_hand_back_resumes(store: Store) -> None:
    model = escalating("Welcome back; the moderator sorted it out.")
    service = ConversationService(SHOP, model, store)
    moderation = service.moderation
    case_id = await escalate(service)
    calls_before = model.calls

    taken = await moderation.act(case_id, "takeover", "mod-1")
    assert taken.ok and "stay quiet" in taken.posts[0].text
    assert not (await moderation.act(case_id, "takeover", "mod-2")).ok

    user = await service.handle(msg("Hello? Is a person there?"))
    moderator = await service.handle(msg("Yes, I'm looking at your order now.", author="mod-1"))
    assert user.taken_over and moderator.taken_over
    assert user.posts == moderator.posts == ()
    assert model.calls == calls_before  # nothing relayed to the model

    session = await store.find_session(KEY)
    assert session is not None and session.taken_over_by == "mod-1"
    items = [e.item for e in await store.entries(session.id)]
    assert items[-2:] == [
        UserTurn("Hello? Is a person there?", "ana"),
        ModeratorMessage("mod-1", "Yes, I'm looking at your order now."),
    ]

    back = await moderation.act(case_id, "handback", "mod-1", agent="Returns")
    assert (
        back.ok and back.posts[0].text == "The moderator handed the conversation back to Returns."
    )
    resumed = await service.handle(msg("Thanks!"))
    assert resumed.posts[0].text == "Welcome back; the moderator sorted it out."
    assert model.requests[-1].agent == "Returns"
    seen = [m.content for m in model.requests[-1].messages]
    assert (
        "A moderator (a person on the support team) wrote: Yes, I'm looking at your order now."
        in seen
    )


async def test_close_ends_the_conversation_and_the_case(store: Store) -> None:
    service = ConversationService(SHOP, escalating(), store)
    moderation = service.moderation
    case_id = await escalate(service)
    closed = await moderation.act(case_id, "close", "mod-1")
    assert closed.ok and closed.case is not None and closed.case.status == "closed"
    session = await store.find_session(KEY)
    assert session is not None and session.status == "closed"
    again = await moderation.act(case_id, "approve", "mod-2")
    assert again.message == f"Case #{case_id} is already closed."
    assert (await moderation.act(999, "approve", "mod-1")).message == "There is no case #999."


async def test_a_case_survives_a_restart(db_path: Path) -> None:
    async with sqlite_store(db_path) as store:
        case_id = await escalate(ConversationService(SHOP, escalating(), store))
    async with sqlite_store(db_path) as store:
        service = ConversationService(
            SHOP, ScriptedModel([say("Approved, refund on its way.")]), store
        )
        result = await service.moderation.act(case_id, "approve", "mod-1")
        assert result.ok
        assert (await service.handle(msg("and now?"))).posts[0].text == (
            "Approved, refund on its way."
        )
        assert [c.status for c in await store.cases(status="approved")] == ["approved"]
