"""Nothing lost, nothing doubled: the outbox, and a table of bad inputs through the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import UserTurn
from bot.engine.loader import load_workflow
from bot.models.scripted import ScriptedModel, call, say
from bot.service import ConversationService, IncomingMessage, Post
from bot.service.outbox import OutboxWorker
from bot.store import SessionKey, SQLiteStore

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
KEY = SessionKey("test", "C1", "t1")


class FlakyPlatform:
    """A chat platform that refuses the first `refusals` posts, then accepts and records."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.posted: list[str] = []

    async def emit(self, post: Post) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionError("platform unavailable")
        self.posted.append(post.text)

    async def deliver(self, key: SessionKey, post: Post) -> None:
        await self.emit(post)


def msg(text: str, thread: str = "t1", **extra: object) -> IncomingMessage:
    return IncomingMessage("test", "C1", thread, text, **extra)  # type: ignore[arg-type]


async def test_refused_posts_wait_in_the_outbox_and_arrive_in_order(store: SQLiteStore) -> None:
    platform = FlakyPlatform(refusals=3)
    model = ScriptedModel(
        [call("handoff_to_Returns", {"reason": "return"}), say("Order number?"), say("Thanks!")]
    )
    service = ConversationService(SHOP, model, store)
    worker = OutboxWorker(service, platform.deliver, backoff=0.0)

    first = await service.handle(msg("I want to return my order"), emit=platform.emit)
    assert len(first.posts) == 2 and platform.posted == []  # refused; the reply queued behind
    second = await service.handle(msg("Order 42"), emit=platform.emit)
    assert second.posts[0].text == "Thanks!" and platform.posted == []  # waits its turn
    assert len(await store.unsent(first.session.id)) == 3  # type: ignore[union-attr]

    while await worker.run_once() == 0:  # two more refusals, then all three arrive
        pass
    assert platform.posted == ["Triage handed you to Returns: return", "Order number?", "Thanks!"]
    assert await store.unsent(first.session.id) == []  # type: ignore[union-attr]
    assert await worker.run_once() == 0  # never sent twice

    platform.refusals = 0
    model_after = ScriptedModel([say("Straight through.")])
    direct = ConversationService(SHOP, model_after, store)
    await direct.handle(msg("more?"), emit=platform.emit)
    assert platform.posted[-1] == "Straight through."


async def test_a_crash_between_storing_and_posting_is_delivered_once_on_restart(
    db_path: Path,
) -> None:
    class Crash(BaseException):
        """Stands for the process dying: nothing after it runs."""

    async def die(post: Post) -> None:
        raise Crash

    async with SQLiteStore(db_path) as store:
        service = ConversationService(SHOP, ScriptedModel([say("The reply.")]), store)
        with pytest.raises(Crash):
            await service.handle(msg("hello"), emit=die)
    async with SQLiteStore(db_path) as store:
        platform = FlakyPlatform(refusals=0)
        restarted = ConversationService(SHOP, ScriptedModel(), store)
        assert await OutboxWorker(restarted, platform.deliver).run_once() == 1
        assert await OutboxWorker(restarted, platform.deliver).run_once() == 0
        session = await store.find_session(KEY)
        assert session is not None
        kinds = [e.item.kind for e in await store.entries(session.id)]
    assert platform.posted == ["The reply."]
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
    store: SQLiteStore, case: str, text: str, kind: str, expected: str
) -> None:
    def echo(request: object) -> object:
        return say("echo: " + (request.messages[-1].content or ""))  # type: ignore[attr-defined]

    model = ScriptedModel(respond=echo)  # type: ignore[arg-type]
    service = ConversationService(SHOP, model, store)
    seen: list[Post] = []

    async def emit(post: Post) -> None:
        seen.append(post)

    await service.handle(msg(text), emit=emit)
    assert [p.kind for p in seen] == [kind]
    assert seen[0].text.startswith(expected), seen[0].text
    session = await store.find_session(KEY)
    for entry in await store.entries(session.id) if session else []:
        stored = getattr(entry.item, "text", "") or ""
        assert not any(ch in stored for ch in "\x00\x07\x1b\u202e\ud800")


async def test_a_100000_character_message_is_cut_with_a_note(store: SQLiteStore) -> None:
    model = ScriptedModel([say("Read it.")])
    service = ConversationService(SHOP, model, store, max_message_chars=4000)
    seen: list[Post] = []

    async def emit(post: Post) -> None:
        seen.append(post)

    await service.handle(msg("word " * 20_000), emit=emit)
    assert [p.text for p in seen] == [
        "Your message was long, so I read only its first 4,000 characters.",
        "Read it.",
    ]
    sent = model.requests[0].messages[-1].content or ""
    assert len(sent) <= 4000 and sent.endswith("word")
    session = await store.find_session(KEY)
    assert session is not None
    stored = (await store.entries(session.id))[0].item
    assert isinstance(stored, UserTurn) and len(stored.text) <= 4000


async def test_an_empty_message_in_a_thread_nobody_owns_is_ignored(store: SQLiteStore) -> None:
    result = await ConversationService(SHOP, ScriptedModel(), store).handle(
        msg("", mentioned=False)
    )
    assert result.ignored and result.posts == ()


async def test_duplicates_of_long_or_empty_messages_get_one_note(store: SQLiteStore) -> None:
    service = ConversationService(
        SHOP, ScriptedModel([say("Read it.")]), store, max_message_chars=100
    )
    seen: list[str] = []

    async def emit(post: Post) -> None:
        seen.append(post.text)

    for _ in range(2):
        await service.handle(msg("word " * 100, event_id="long-1"), emit=emit)
        await service.handle(msg("", event_id="empty-1"), emit=emit)
    assert seen == [
        "Your message was long, so I read only its first 100 characters.",
        "Read it.",
        "I didn't get any text there. Could you type your question?",
    ]
