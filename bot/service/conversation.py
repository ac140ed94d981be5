"""`ConversationService`: from an incoming message to stored steps and posts under personas."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.engine.agents import Persona
from bot.engine.events import (
    AgentMessage,
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
from bot.service.lanes import Lanes
from bot.service.messages import IncomingMessage, Post, TurnResult
from bot.service.window import WindowCache
from bot.store.base import (
    Case,
    ModelUsage,
    Session,
    SessionKey,
    SessionStore,
    Status,
    StoreError,
)

log = logging.getLogger(__name__)

Emit = Callable[[Post], Awaitable[None]]
Started = Callable[[Persona], Awaitable[None]]

FAILED_TEXT = (
    "I'm sorry, something went wrong on my side while answering. Your message is saved; "
    "please try again in a moment."
)
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
    ) -> None:
        self.workflow = workflow
        self.store = store
        self.window = window or WindowBudget()
        self.show_handoffs = show_handoffs
        self._runner = Runner(workflow, model)
        self.lanes = Lanes()
        self._windows = WindowCache(self.window.items, self.window.cached_sessions)
        self._opened: dict[int, list[Case]] = {}

    async def handle(
        self,
        message: IncomingMessage,
        *,
        emit: Emit | None = None,
        on_start: Started | None = None,
    ) -> TurnResult:
        """Answer one incoming message exactly once.

        `emit` receives posts as they happen; `on_start` is told, with the persona that will
        answer first, when a turn really starts (never for a duplicate or ignored message).
        """
        event = (message.platform, message.event_id) if message.event_id else None
        user = UserTurn(message.text, message.author)
        async with self.lanes.hold(message.key):
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
            if on_start is not None:
                entry = self.workflow.entry_agent(session.active_agent)
                await on_start(self.workflow.agent(entry).display)
            return await self._run(session, emit)

    async def end(self, key: SessionKey, *, by: str = "user") -> TurnResult:
        """Close the thread's open conversation at the user's request."""
        async with self.lanes.hold(key):
            session = await self.store.find_session(key)
            if session is None or session.status == "closed":
                return TurnResult(session, ignored=True)
            closed = await self.store.append(
                session.id, [Notice(f"Conversation ended by {by}.")], status="closed"
            )
            log.info("session %s ended by %s", key, by)
            post = Post("notice", ENDED_TEXT, self.workflow.agent(self.workflow.start).display)
            return TurnResult(closed, (post,))

    async def owns(self, key: SessionKey) -> bool:
        """Whether the thread has an open conversation (adapters answer un-mentioned messages)."""
        session = await self.store.find_session(key)
        return session is not None and session.status == "open"

    async def _run(self, session: Session, emit: Emit | None) -> TurnResult:
        posts: list[Post] = []
        session_id = session.id

        async def publish(post: Post | None) -> None:
            if post is not None:
                posts.append(post)
                if emit is not None:
                    await emit(post)

        try:
            history = await self._history(session)
            async for event in self._runner.run(history, session.active_agent):
                session = await self._persist(session, event)
                await publish(self._post(session, event))
        except StoreError:
            raise
        except Exception:
            # Every step already stored is consistent on its own; say so honestly and go on.
            log.exception("session %s: turn failed", session.key)
            session = await self._persist_notice(session, "Turn failed: internal error.")
            persona = self.workflow.agent(self.workflow.entry_agent(session.active_agent)).display
            await publish(Post("notice", FAILED_TEXT, persona))
        return TurnResult(session, tuple(posts), cases=tuple(self._opened.pop(session_id, ())))

    async def _persist_notice(self, session: Session, text: str) -> Session:
        stored = await self.store.append(session.id, [Notice(text)])
        if stored is None:
            return session
        self._windows.extend(stored.id, stored.item_count, [Notice(text)])
        return stored

    async def _history(self, session: Session) -> list[Item]:
        """The recent window the prompt needs, always with the conversation's first message."""
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

    async def _persist(self, session: Session, event: Event) -> Session:
        active = event.target if isinstance(event, HandoffSent) else None
        status: Status | None = "closed" if isinstance(event, Closed) else None
        if not event.records and active is None and status is None:
            return session
        usage = None
        case = None
        if isinstance(event, HandoffSent) and self.workflow.agent(event.target).review:
            case = (event.target, event.reason)
        if isinstance(event, ModelCalled):
            tokens = event.usage or Usage()
            usage = ModelUsage(
                event.agent, event.model, tokens.prompt_tokens, tokens.completion_tokens
            )
        stored = await self.store.append(
            session.id,
            event.records,
            active_agent=active,
            status=status,
            usage=usage,
            open_case=case,
        )
        assert stored is not None
        if case is not None:
            opened = (await self.store.cases(session_id=session.id, limit=1))[0]
            self._opened.setdefault(session.id, []).append(opened)
            log.warning("session %s: case #%d opened for %s", session.key, opened.id, case[0])
        self._windows.extend(stored.id, stored.item_count, event.records)
        return stored

    def _post(self, session: Session, event: Event) -> Post | None:
        match event:
            case AgentMessage(agent=agent, text=text):
                return Post("reply", text, self.workflow.agent(agent).display, agent)
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
