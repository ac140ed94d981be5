"""Running one user turn: the window the model is shown, each step stored, what each step posts."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from bot.engine.events import Closed, Event, HandoffSent, ModelCalled, TurnStopped
from bot.engine.runner import Runner
from bot.engine.transcript import Item, Notice, UserTurn, trim_window
from bot.engine.workflow import Workflow
from bot.models.base import ChatModel, Usage
from bot.service.delivery import Delivery
from bot.service.messages import Post, post_to_dict
from bot.service.window import WindowBudget, WindowCache
from bot.store.protocols import Cases, Conversations, Outbox
from bot.store.values import Case, Entry, ModelUsage, NewCase, Session, Status, Step, StoreError

log = logging.getLogger(__name__)

FAILED_TEXT = (
    "I'm sorry, something went wrong on my side while answering. Your message is saved; "
    "please try again in a moment."
)
CLOSED_TEXT = "This conversation is closed. Mention me to start a new one."


class TurnStore(Conversations, Cases, Outbox, Protocol):
    """The parts of the store a turn uses."""


class Turns:
    """Runs user turns of one workflow: each step stored with the post it owes, then posted."""

    def __init__(
        self,
        workflow: Workflow,
        model: ChatModel,
        store: TurnStore,
        window: WindowBudget,
        *,
        show_handoffs: bool,
    ) -> None:
        self.workflow = workflow
        self.store = store
        self.window = window
        self.show_handoffs = show_handoffs
        self.runner = Runner(workflow, model)
        self.windows = WindowCache(window.items, window.cached_sessions)

    async def run(
        self, session: Session, user: Item, delivery: Delivery
    ) -> tuple[Session, list[Case]]:
        """Run the turn the stored `user` item asks for; the session after it, and cases opened."""
        self.windows.extend(session.id, session.item_count, [user])
        opened: list[Case] = []
        try:
            history = await self._history(session, user)
            deferred: list[Event] = []
            async for event in self.runner.run(history, session.active_agent):
                if isinstance(event, ModelCalled) and not event.reply.text and event.records:
                    # A reply that is only tool calls owes the thread nothing: store it with
                    # the calls' results, in one transaction (each step stays whole).
                    deferred.append(event)
                    continue
                post = delivery.queued(self._post(session, event))
                session = await self._persist(
                    session, [*deferred, event], post, delivery.take(), opened
                )
                deferred.clear()
                await delivery.publish(post)
            if deferred:
                session = await self._persist(session, deferred, None, delivery.take(), opened)
        except StoreError:
            raise
        except Exception:
            # Every step already stored is consistent on its own; say so honestly and go on.
            log.exception("session %s: turn failed", session.key)
            persona = self.workflow.agent(self.workflow.entry_agent(session.active_agent)).display
            post = delivery.queued(Post("notice", FAILED_TEXT, persona))
            assert post is not None
            step = Step(
                session.id,
                items=(Notice("Turn failed: internal error."),),
                posts=(post_to_dict(post),),
                delivered=delivery.take(),
            )
            session = await self._commit(session, step)
            await delivery.publish(post)
        return session, opened

    async def _history(self, session: Session, user: Item) -> list[Item]:
        """The recent window the prompt needs, always with the conversation's first message."""
        window = self.windows.get(session.id, session.item_count)
        if window is None and session.item_count == 1 and isinstance(user, UserTurn):
            # A new conversation: its only item is the message just received.
            self.windows.load(session.id, [Entry(1, time.time(), user)], None)
            window = self.windows.get(session.id, session.item_count)
        if window is None:
            entries = await self.store.recent(session.id, self.window.items)
            first = None
            if entries and entries[0].seq > 1:
                first = await self.store.first_user_entry(session.id)
            self.windows.load(session.id, entries, first)
            window = self.windows.get(session.id, session.item_count)
            assert window is not None
        seqs, items, costs = zip(*window.items, strict=True) if window.items else ((), (), ())
        kept = trim_window(items, self.window.tokens, costs)
        oldest = seqs[len(seqs) - len(kept)] if kept else None
        if window.first_user is not None and (oldest is None or window.first_user_seq < oldest):
            kept.insert(0, window.first_user)
        return kept

    async def _persist(
        self,
        session: Session,
        events: list[Event],
        post: Post | None,
        delivered: int,
        opened: list[Case],
    ) -> Session:
        """Store the steps' records with the post they owe the thread, in one transaction."""
        records = tuple(record for event in events for record in event.records)
        agent = next((e.target for e in events if isinstance(e, HandoffSent)), None)
        status: Status | None = "closed" if any(isinstance(e, Closed) for e in events) else None
        if not records and agent is None and status is None and post is None:
            await self.store.mark_sent(session.id, delivered)  # nothing else to store
            return session
        case = next(
            (
                NewCase(e.target, e.reason)
                for e in events
                if isinstance(e, HandoffSent) and self.workflow.agent(e.target).review
            ),
            None,
        )
        called = next((e for e in events if isinstance(e, ModelCalled)), None)
        usage = None
        if called is not None:  # at most one model call per stored group
            tokens = called.usage or Usage()
            usage = ModelUsage(
                called.agent, called.model, tokens.prompt_tokens, tokens.completion_tokens
            )
        step = Step(
            session.id,
            items=records,
            agent=agent,
            status=status,
            usage=usage,
            case=case,
            posts=(post_to_dict(post),) if post is not None else (),
            delivered=delivered,
        )
        session = await self._commit(session, step)
        if case is not None:
            found = await self.store.cases(session_id=session.id, limit=1)
            opened.extend(found)
            log.warning("session %s: case #%d opened for %s", session.key, found[0].id, case.agent)
        return session

    async def _commit(self, session: Session, step: Step) -> Session:
        stored = await self.store.commit(step)
        if stored is None:
            return session
        self.windows.extend(stored.id, stored.item_count, step.items)
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
