"""`ConversationService`: from an incoming message to stored steps and posts under personas."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.engine.agents import Persona
from bot.engine.events import (
    Closed,
    Event,
    HandoffSent,
    ModelCalled,
    TurnStopped,
)
from bot.engine.runner import Runner
from bot.engine.transcript import Item, Notice, UserTurn, trim_window
from bot.engine.workflow import Workflow
from bot.models.base import ChatModel, Usage
from bot.service.inputs import clean_text, limit_text
from bot.service.lanes import Lanes
from bot.service.messages import IncomingMessage, Post, TurnResult, post_to_dict
from bot.service.window import WindowCache
from bot.store.base import (
    Case,
    Entry,
    ModelUsage,
    Session,
    SessionKey,
    SessionStore,
    Status,
    StoreError,
)

log = logging.getLogger(__name__)

Emit = Callable[[Post], Awaitable[None]]
Started = Callable[[Persona], Awaitable[str | None]]

FAILED_TEXT = (
    "I'm sorry, something went wrong on my side while answering. Your message is saved; "
    "please try again in a moment."
)
STORE_DOWN_TEXT = (
    "I'm sorry, I can't reach my conversation store right now, so I can't answer safely. "
    "Please try again in a few minutes."
)
EMPTY_TEXT = "I didn't get any text there. Could you type your question?"
LONG_TEXT = "Your message was long, so I read only its first {limit:,} characters."
CLOSED_TEXT = "This conversation is closed. Mention me to start a new one."
ENDED_TEXT = "Conversation ended. Your next message to me starts a new one."


@dataclass(frozen=True, slots=True)
class WindowBudget:
    """How much history a turn loads: at most `items` entries, about `tokens` tokens."""

    items: int = 200
    tokens: int = 6000
    cached_sessions: int = 1024


class ConversationService:
    """Dedupe, find or open the thread's session, run the turn, persist each step, post."""

    def __init__(
        self,
        workflow: Workflow,
        model: ChatModel,
        store: SessionStore,
        *,
        window: WindowBudget | None = None,
        show_handoffs: bool = True,
        max_message_chars: int = 4000,
    ) -> None:
        self.workflow = workflow
        self.store = store
        self.window = window or WindowBudget()
        self.show_handoffs = show_handoffs
        self.max_message_chars = max_message_chars
        self._runner = Runner(workflow, model)
        self.lanes = Lanes()
        self._windows = WindowCache(self.window.items, self.window.cached_sessions)
        self._opened: dict[int, list[Case]] = {}
        self.backlog: set[int] = set()  # sessions with posts waiting for the outbox worker
        self.in_flight = 0
        self.retry_delay = 1.0

    async def handle(
        self,
        message: IncomingMessage,
        *,
        emit: Emit | None = None,
        on_start: Started | None = None,
    ) -> TurnResult:
        """Answer one incoming message exactly once.

        `emit` receives posts as they happen; `on_start` is told, with the persona that will
        answer first, when a turn really starts (never for a duplicate or ignored message). It
        may return a reference to a placeholder it posted: the turn's first queued post carries
        it, so a post delivered after a crash can remove the placeholder.
        """
        event = (message.platform, message.event_id) if message.event_id else None
        text, cut = limit_text(clean_text(message.text), self.max_message_chars)
        if not text:
            return await self._empty(message, emit)
        if cut and emit is not None:
            persona = self.workflow.agent(self.workflow.start).display
            note = Post("notice", LONG_TEXT.format(limit=self.max_message_chars), persona)
            emit = _after(note, emit)
        user = UserTurn(text, message.author)
        self.in_flight += 1
        try:
            return await self._handle(message, user, event, emit, on_start)
        finally:
            self.in_flight -= 1

    async def _handle(
        self,
        message: IncomingMessage,
        user: UserTurn,
        event: tuple[str, str] | None,
        emit: Emit | None,
        on_start: Started | None,
    ) -> TurnResult:
        async with self.lanes.hold(message.key), self.store.thread_lock(message.key):
            received = await self.store.receive(
                message.key,
                user,
                event=event,
                workflow=self.workflow.name,
                start_agent=self.workflow.start,
                may_open=message.mentioned,
            )
            if received.session is None or received.outcome != "stored":
                duplicate = received.outcome == "duplicate"
                return TurnResult(received.session, duplicate=duplicate, ignored=not duplicate)
            session = received.session
            if session.item_count == 1:
                log.info("session %s opened (%s)", message.key, self.workflow.name)
            if session.taken_over_by is not None:
                # A moderator holds the thread: keep the message, relay nothing to the model.
                return TurnResult(session, taken_over=True)
            self._windows.extend(session.id, session.item_count, [user])
            placeholder = None
            if on_start is not None:
                entry = self.workflow.entry_agent(session.active_agent)
                placeholder = await on_start(self.workflow.agent(entry).display)
            if received.backlog:
                self.backlog.add(session.id)  # posts left by another process wait first
            return await self._run(session, emit, user, placeholder)

    async def _empty(self, message: IncomingMessage, emit: Emit | None) -> TurnResult:
        """An empty or attachment-only message: a short reply where the bot is addressed."""
        if not message.mentioned and not await self.owns(message.key):
            return TurnResult(None, ignored=True)
        if message.event_id and not await self.store.claim_event(
            message.platform, message.event_id
        ):
            return TurnResult(None, duplicate=True)
        post = Post("notice", EMPTY_TEXT, self.workflow.agent(self.workflow.start).display)
        if emit is not None:
            await emit(post)
        return TurnResult(None, (post,), ignored=True)

    async def end(self, key: SessionKey, *, by: str = "user") -> TurnResult:
        """Close the thread's open conversation at the user's request."""
        async with self.lanes.hold(key), self.store.thread_lock(key):
            session = await self.store.find_session(key)
            if session is None or session.status == "closed":
                return TurnResult(session, ignored=True)
            closed = await self.store.append(
                session.id, [Notice(f"Conversation ended by {by}.")], status="closed"
            )
            log.info("session %s ended by %s", key, by)
            post = Post("notice", ENDED_TEXT, self.workflow.agent(self.workflow.start).display)
            return TurnResult(closed, (post,))

    def unavailable(self) -> Post:
        """What to tell the user when the store itself fails (it cannot queue this post)."""
        return Post("notice", STORE_DOWN_TEXT, self.workflow.agent(self.workflow.start).display)

    async def owns(self, key: SessionKey) -> bool:
        """Whether the thread has an open conversation (adapters answer un-mentioned messages)."""
        session = await self.store.find_session(key)
        return session is not None and session.status == "open"

    async def _run(
        self, session: Session, emit: Emit | None, user: UserTurn, placeholder: str | None = None
    ) -> TurnResult:
        delivery = _Delivery(self, session.id, emit, placeholder)
        try:
            history = await self._history(session, user)
            deferred: list[Event] = []
            async for event in self._runner.run(history, session.active_agent):
                if isinstance(event, ModelCalled) and not event.reply.text and event.records:
                    # A reply that is only tool calls owes the thread nothing: store it with
                    # the calls' results, in one transaction (each step stays whole).
                    deferred.append(event)
                    continue
                post = self._post(session, event)
                session = await self._persist(
                    session, [*deferred, event], delivery.queued(post), delivery.take()
                )
                deferred.clear()
                await delivery.publish(post)
            if deferred:
                session = await self._persist(session, deferred, None, delivery.take())
        except StoreError:
            raise
        except Exception:
            # Every step already stored is consistent on its own; say so honestly and go on.
            log.exception("session %s: turn failed", session.key)
            persona = self.workflow.agent(self.workflow.entry_agent(session.active_agent)).display
            post = Post("notice", FAILED_TEXT, persona)
            session = await self._persist_notice(
                session, "Turn failed: internal error.", delivery.queued(post), delivery.take()
            )
            await delivery.publish(post)
        await self.store.mark_sent(session.id, delivery.take())
        cases = tuple(self._opened.pop(session.id, ()))
        return TurnResult(session, tuple(delivery.posts), cases=cases)

    async def drain(self, within: float = 30.0) -> bool:
        """Wait for running turns to finish; False if `within` seconds ran out first."""
        deadline = time.monotonic() + within
        while self.in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _persist_notice(
        self, session: Session, text: str, post: Post | None, delivered: int
    ) -> Session:
        stored = await self.store.append(
            session.id,
            [Notice(text)],
            posts=[post_to_dict(post)] if post else [],
            delivered=delivered,
        )
        if stored is None:
            return session
        self._windows.extend(stored.id, stored.item_count, [Notice(text)])
        return stored

    async def _history(self, session: Session, user: UserTurn | None = None) -> list[Item]:
        """The recent window the prompt needs, always with the conversation's first message."""
        window = self._windows.get(session.id, session.item_count)
        if window is None and session.item_count == 1 and user is not None:
            # A new conversation: its only item is the message just received.
            self._windows.load(session.id, [Entry(1, time.time(), user)], None)
            window = self._windows.get(session.id, session.item_count)
        if window is None:
            entries = await self.store.recent(session.id, self.window.items)
            first = None
            if entries and entries[0].seq > 1:
                first = await self.store.first_user_entry(session.id)
            self._windows.load(session.id, entries, first)
            window = self._windows.get(session.id, session.item_count)
            assert window is not None
        seqs, items, costs = zip(*window.items, strict=True) if window.items else ((), (), ())
        kept = trim_window(items, self.window.tokens, costs)
        oldest = seqs[len(seqs) - len(kept)] if kept else None
        if window.first_user is not None and (oldest is None or window.first_user_seq < oldest):
            kept.insert(0, window.first_user)
        return kept

    async def _persist(
        self, session: Session, events: list[Event], post: Post | None, delivered: int
    ) -> Session:
        """Store the steps' records with the post they owe the thread, in one transaction."""
        records = [record for event in events for record in event.records]
        active = next((e.target for e in events if isinstance(e, HandoffSent)), None)
        status: Status | None = "closed" if any(isinstance(e, Closed) for e in events) else None
        if not records and active is None and status is None and post is None:
            if delivered:
                await self.store.mark_sent(session.id, delivered)
            return session
        case = next(
            (
                (e.target, e.reason)
                for e in events
                if isinstance(e, HandoffSent) and self.workflow.agent(e.target).review
            ),
            None,
        )
        usage = None
        called = [e for e in events if isinstance(e, ModelCalled)]
        if called:  # at most one model call per persisted group
            tokens = called[0].usage or Usage()
            usage = ModelUsage(
                called[0].agent, called[0].model, tokens.prompt_tokens, tokens.completion_tokens
            )
        stored = await self.store.append(
            session.id,
            records,
            active_agent=active,
            status=status,
            usage=usage,
            open_case=case,
            posts=[post_to_dict(post)] if post is not None else [],
            delivered=delivered,
        )
        assert stored is not None
        if case is not None:
            opened = (await self.store.cases(session_id=session.id, limit=1))[0]
            self._opened.setdefault(session.id, []).append(opened)
            log.warning("session %s: case #%d opened for %s", session.key, opened.id, case[0])
        self._windows.extend(stored.id, stored.item_count, records)
        return stored

    def _post(self, session: Session, event: Event) -> Post | None:
        """The post a step owes the thread; a reply is queued with the model call that wrote it."""
        match event:
            case ModelCalled(agent=agent, reply=reply) if reply.text and reply.text.strip():
                return Post("reply", reply.text, self.workflow.agent(agent).display, agent)
            case HandoffSent(source=source, target=target, reason=reason):
                log.info("session %s: %s handed off to %s", session.key, source, target)
                if not self.show_handoffs:
                    return None
                because = f": {reason}" if reason else ""
                text = f"{source} handed you to {target}{because}"
                return Post("handoff", text, self.workflow.agent(target).display, target)
            case TurnStopped(agent=agent, cause=cause, notice=notice):
                log.warning("session %s: turn stopped (%s) at %s", session.key, cause, agent)
                return Post("notice", notice.text, self.workflow.agent(agent).display, agent)
            case Closed(agent=agent):
                log.info("session %s closed by the termination condition", session.key)
                return Post("notice", CLOSED_TEXT, self.workflow.agent(agent).display, agent)
            case _:
                return None


class _Delivery:
    """One turn's posts: delivered through `emit` in order, or left queued in the outbox.

    Once a post fails (or the thread already has a backlog), later posts of the turn stay
    queued behind it, so the outbox worker delivers them in order.
    """

    def __init__(
        self,
        service: ConversationService,
        session_id: int,
        emit: Emit | None,
        placeholder: str | None = None,
    ) -> None:
        self.service = service
        self.session_id = session_id
        self.emit = emit
        self._placeholder = placeholder
        self.posts: list[Post] = []
        self._delivered = 0
        self._blocked = session_id in service.backlog

    def queued(self, post: Post | None) -> Post | None:
        """The post as the outbox keeps it: the turn's first one names the placeholder."""
        if post is None or self._placeholder is None:
            return post
        placeholder, self._placeholder = self._placeholder, None
        return dataclasses.replace(post, replaces=placeholder)

    def take(self) -> int:
        """Posts delivered since the last call, for the next store write to mark sent."""
        count, self._delivered = self._delivered, 0
        return count

    async def publish(self, post: Post | None) -> None:
        if post is None:
            return
        self.posts.append(post)
        if self.emit is None:
            self._delivered += 1  # the caller posts what the result returns
            return
        if self._blocked:
            return
        try:
            await self.emit(post)
        except Exception as exc:
            self._blocked = True
            self.service.backlog.add(self.session_id)
            store = self.service.store
            await store.mark_sent(self.session_id, self.take())
            retry = time.time() + self.service.retry_delay
            await store.mark_failed(self.session_id, f"{type(exc).__name__}: {exc}", retry)
            log.warning(
                "session %d: post failed (%s); queued for retry",
                self.session_id,
                type(exc).__name__,
            )
            return
        self._delivered += 1


def _after(first: Post, emit: Emit) -> Emit:
    """`emit` that sends `first` before the first post of the turn (a real turn, not a dup)."""
    pending = [first]

    async def wrapped(post: Post) -> None:
        while pending:
            await emit(pending.pop())
        await emit(post)

    return wrapped
