"""Nothing lost, nothing doubled: the outbox, and a table of bad inputs through the service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.engine import UserTurn
from bot.engine.loader import load_workflow
from bot.service import ConversationService, IncomingMessage, Post
from bot.store import SessionKey, Store, sqlite_store
from bot.testing import RecordingPlatform, ScriptedModel, call, say

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
KEY = SessionKey("test", "C1", "t1")


def msg(text: str, thread: str = "t1", **extra: object) -> IncomingMessage:
    return IncomingMessage("test", "C1", thread, text, **extra)  # type: ignore[arg-type]


async def deliver_all(service: ConversationService) -> None:
    """What the periodic sweep does while serving: kick every thread with work, let it run."""
    await service.sweep()
    await service.threads.settled()


async def test_refused_posts_wait_in_the_outbox_and_arrive_in_order(store: Store) -> None:
    platform = RecordingPlatform(refuse=1000)  # down
    model = ScriptedModel(
        [call("handoff_to_Returns", {"reason": "return"}), say("Order number?"), say("Thanks!")]
    )
    service = ConversationService(SHOP, model, store, platform, retry_delay=0.0)

    first = await service.handle(msg("I want to return my order"))
    assert len(first.posts) == 2 and platform.texts() == []  # refused; the reply queued behind
    second = await service.handle(msg("Order 42"))
    assert second.posts[0].text == "Thanks!" and platform.texts() == []  # waits its turn
    assert len(await store.unsent(first.session.id)) == 3  # type: ignore[union-attr]

    platform.refuse = 2  # two more refusals, then all three arrive, in order
    for _ in range(3):
        await deliver_all(service)
    assert platform.texts() == ["Triage handed you to Returns: return", "Order number?", "Thanks!"]
    assert await store.unsent(first.session.id) == []  # type: ignore[union-attr]
    await deliver_all(service)
    assert len(platform.texts()) == 3  # never sent twice

    direct = ConversationService(SHOP, ScriptedModel([say("Straight through.")]), store, platform)
    await direct.handle(msg("more?"))
    assert platform.texts()[-1] == "Straight through."


class AcceptedThenLost(RecordingPlatform):
    """The platform accepts a post, but its answer never arrives (a timeout, a reset)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 1

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        ref = await super().send(key, post, tag=tag, start=start, plain=plain)
        if self.lose:
            self.lose -= 1
            raise TimeoutError("no answer")
        return ref


async def test_a_post_accepted_before_a_failure_is_found_not_sent_again(db_path: Path) -> None:
    platform = AcceptedThenLost()
    async with sqlite_store(db_path) as store:
        service = ConversationService(
            SHOP, ScriptedModel([say("The reply.")]), store, platform, retry_delay=0.2
        )
        await service.handle(msg("hello"))
        assert platform.texts() == ["The reply."] and len(await store.unsent(1)) == 1
    await asyncio.sleep(0.25)  # the retry comes due
    async with sqlite_store(db_path) as store:  # a restart: another process, same platform
        restarted = ConversationService(SHOP, ScriptedModel(), store, platform)
        await deliver_all(restarted)
        assert await store.unsent(1) == []
        session = await store.find_session(KEY)
        assert session is not None
        kinds = [e.item.kind for e in await store.entries(session.id)]
    assert platform.texts() == ["The reply."]  # found on the platform: not posted twice
    assert kinds == ["user", "agent"]  # the transcript holds the reply once


BAD_INPUTS = [
    ("empty", "", "notice", "I didn't get any text there"),
    ("whitespace", " \n\t  ", "notice", "I didn't get any text there"),
    ("only control characters", "\x00\x07\x1b[31m", "reply", "echo: [31m"),
    ("control characters inside", "hi\x00 there\x1b\u202e!", "reply", "echo: hi there!"),
    ("lone surrogate", "bad \ud800 text", "reply", "echo: bad ? text"),
]


@pytest.mark.parametrize(
    ("case", "text", "kind", "expected"), BAD_INPUTS, ids=[case for case, *_ in BAD_INPUTS]
)
async def test_bad_input_table(
    store: Store, case: str, text: str, kind: str, expected: str
) -> None:
    def echo(request: object) -> object:
        return say("echo: " + (request.messages[-1].content or ""))  # type: ignore[attr-defined]

    model = ScriptedModel(respond=echo)  # type: ignore[arg-type]
    platform = RecordingPlatform()
    await ConversationService(SHOP, model, store, platform).handle(msg(text))
    seen = [post for _, post in platform.posts]
    assert [p.kind for p in seen] == [kind]
    assert seen[0].text.startswith(expected), seen[0].text
    session = await store.find_session(KEY)
    for entry in await store.entries(session.id) if session else []:
        stored = getattr(entry.item, "text", "") or ""
        assert not any(ch in stored for ch in "\x00\x07\x1b\u202e\ud800")


async def test_a_100000_character_message_is_cut_with_a_note(store: Store) -> None:
    model = ScriptedModel([say("Read it.")])
    platform = RecordingPlatform()
    service = ConversationService(SHOP, model, store, platform, max_message_chars=4000)
    await service.handle(msg("word " * 20_000))
    assert platform.texts() == [
        "Your message was long, so I read only its first 4,000 characters.",
        "Read it.",
    ]
    sent = model.requests[0].messages[-1].content or ""
    assert len(sent) <= 4000 and sent.endswith("word")
    session = await store.find_session(KEY)
    assert session is not None
    stored = (await store.entries(session.id))[0].item
    assert isinstance(stored, UserTurn) and len(stored.text) <= 4000


async def test_an_empty_message_in_a_thread_nobody_owns_is_ignored(store: Store) -> None:
    result = await ConversationService(SHOP, ScriptedModel(), store).handle(
        msg("", mentioned=False)
    )
    assert result.ignored and result.posts == ()


async def test_duplicates_of_long_or_empty_messages_get_one_note(store: Store) -> None:
    platform = RecordingPlatform()
    service = ConversationService(
        SHOP, ScriptedModel([say("Read it.")]), store, platform, max_message_chars=100
    )
    for _ in range(2):
        await service.handle(msg("word " * 100, event_id="long-1"))
        await service.handle(msg("", event_id="empty-1"))
    assert platform.texts() == [
        "Your message was long, so I read only its first 100 characters.",
        "Read it.",
        "I didn't get any text there. Could you type your question?",
    ]


HIDDEN = "\x00\x07\u202e\u2066\u200b\ufeff\U000e0041\U000e0042"  # NUL, bell, bidi, zero-width, tags


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        async with sqlite_store(db_path) as opened:
            yield opened
        return
    from bot.store import postgres_store
    from tests.store.conftest import POSTGRES_DSN, drop_schema, postgres_schema

    schema = await postgres_schema()
    assert schema is not None
    try:
        async with postgres_store(POSTGRES_DSN, schema=schema) as opened:
            yield opened
    finally:
        await drop_schema(schema)


async def test_model_text_is_bounded_and_cleaned_like_user_text(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reason = f"Refund{HIDDEN} asked " + "again and again " * 100
    reply = f"Your{HIDDEN} label " + "is on its way " * 1000
    model = ScriptedModel([call("handoff_to_Returns", {"reason": reason}), say(reply)])
    platform = RecordingPlatform()
    service = ConversationService(SHOP, model, any_store, platform)
    result = await service.handle(msg(f"return{HIDDEN} my order, secretly"))

    assert not result.failed
    sent = model.requests[0].messages[-1].content
    assert sent == "return my order, secretly"  # the model never sees hidden instructions
    handoff, answer = platform.texts()
    assert handoff.startswith("Triage handed you to Returns: Refund asked again")
    assert handoff.endswith("…(the reason was cut at 300 characters)") and len(handoff) < 400
    assert answer.startswith("Your label is on its way")
    assert answer.endswith("…(the reply was cut at 8,000 characters)") and len(answer) < 8100
    session = await any_store.find_session(KEY)
    assert session is not None
    stored = repr([e.item for e in await any_store.entries(session.id)])
    assert not any(ch in stored for ch in HIDDEN)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "secretly" not in logged and "again and again" not in logged and "on its way" not in logged
    )


async def test_a_message_of_40000_combining_marks_is_cut_before_it_is_cleaned(store: Store) -> None:
    model = ScriptedModel([say("Read it.")])
    platform = RecordingPlatform()
    service = ConversationService(SHOP, model, store, platform, max_message_chars=4000)
    await service.handle(msg("a" + "\u0301" * 40_000))
    assert platform.texts()[0].startswith("Your message was long")
    assert model.requests[0].messages[-1].content == "\u00e1" + "\u0301" * 3  # folded, NFC
