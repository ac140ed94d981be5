"""Running one user turn as a job: the window the model sees, and each step stored with the
posts it owes, so that a turn cut short (a crash, a lost lease) goes on where it stopped.

A step is stored before anything that takes time happens after it: a reply with text before its
tools run, each tool's result before the next call, a handoff before the target is asked. A final
reply is stored with the end of the turn, which marks the message answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot import observe
from bot.engine import events as ev
from bot.engine.handoffs import looks_like_handoff
from bot.engine.runner import Runner
from bot.engine.transcript import Item, Notice, trim_window
from bot.engine.workflow import Workflow
from bot.models.base import Usage
from bot.service.messages import Post, post_to_dict
from bot.service.rules import WORKING_TEXT
from bot.service.streaming import Streamer
from bot.service.window import WindowBudget, WindowCache
from bot.store.protocols import Cases, Conversations
from bot.store.values import (
    Case,
    Entry,
    Fence,
    InboxRow,
    ModelUsage,
    NewCase,
    PendingCall,
    Session,
    Status,
    Step,
    StoreError,
    TurnMark,
)

log = logging.getLogger(__name__)

FAILED_TEXT = (
    "I'm sorry, something went wrong on my side while answering. Your message is saved; "
    "please try again in a moment."
)
CLOSED_TEXT = "This conversation is closed. Mention me to start a new one."
REVIEW_NOTICE = "A specialist will look at this with you."  # a handoff to a review agent
PAUSE_NOTICE = "Your request is with a reviewer; I'll come back to you here."
APPROVAL_NOTICE = "This needs a team member's approval; I'll come back to you here."
_ENDS = (ev.AwaitingUser, ev.Closed, ev.TurnStopped, ev.Paused)

Deliver = Callable[[], Awaitable[object]]


class TurnStore(Conversations, Cases, Protocol):
    """The parts of the store a turn uses."""


@dataclass(eq=False)
class Turn:
    """One running turn: its message, its lease, and what it has stored and posted so far."""

    session: Session
    row: InboxRow
    fence: Fence | None
    deliver: Deliver
    posts: list[Post] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    done: bool = False


@dataclass(eq=False)
class Turns:
    """Runs the turns of one workflow, each step stored with the posts it owes."""

    runner: Runner
    store: TurnStore
    window: WindowBudget
    show_handoffs: bool
    placeholders: bool  # the platform shows a placeholder: the turn's end removes it if unused
    streams: Streamer
    windows: WindowCache = field(init=False)

    def __post_init__(self) -> None:
        window = self.window
        self.windows = WindowCache(window.items, window.cached_sessions, window.cache_bytes)

    @property
    def workflow(self) -> Workflow:
        return self.runner.workflow

    async def run(self, turn: Turn) -> Turn:
        """Run the turn the stored message asks for, from its first step or where it stopped."""
        with observe.turn(turn.session, turn.row.message.text) as observed:  # span, metrics
            await self._run(turn, observed)
        return turn

    async def _run(self, turn: Turn, observed: observe.turn) -> None:
        group: list[ev.Event] = []
        try:
            history, start = await self._history(turn.session, turn.row.seq)
            agent = turn.session.active_agent
            async for event in self.runner.run(
                history, agent, start=start, scope=scope_of(turn.session)
            ):
                if isinstance(event, ev.Writing):
                    persona = self.workflow.agent(event.agent).display
                    self.streams.write(turn.session.key, turn.row.id, persona, event.text)
                    continue
                group.append(event)
                observed.outcome = _outcome(event) or observed.outcome
                if _held(event):
                    continue
                await self._store(turn, group, done=isinstance(event, _ENDS))
                group.clear()
            if not turn.done:
                await self._store(turn, group, done=True)
        except StoreError:
            raise
        except Exception:
            # Every step already stored is consistent on its own; say so honestly and go on.
            observed.outcome = "failed"
            await self.streams.settle(turn.row.id)
            log.exception("session %s: turn failed", turn.session.key)
            session = turn.session
            persona = self.workflow.agent(self.workflow.entry_agent(session.active_agent)).display
            post = Post("notice", FAILED_TEXT, persona)
            await self._commit(turn, (Notice("Turn failed: internal error."),), [post], done=True)

    async def _history(self, session: Session, seq: int | None) -> tuple[list[Item], int | None]:
        """The recent window the prompt needs, with the conversation's first message, and the
        position in it of the turn's message (`seq`)."""
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
        kept_seqs = list(seqs[len(seqs) - len(kept) :])
        if seq in seqs and seq not in kept_seqs:  # the turn's own steps are never cut off
            at = seqs.index(seq)
            kept, kept_seqs = list(items[at:]), list(seqs[at:])
        opening = window.first_user
        if opening is not None and (not kept_seqs or window.first_user_seq < kept_seqs[0]):
            kept.insert(0, opening)
            kept_seqs.insert(0, window.first_user_seq)
        start = kept_seqs.index(seq) if seq in kept_seqs else None
        return kept, start

    def admitted(self, session: Session, user: Item) -> None:
        """The message that starts a turn was just stored: keep the cached window whole."""
        if session.item_count == 1:
            self.windows.load(session.id, [Entry(1, time.time(), user)], None)
        else:
            self.windows.extend(session.id, session.item_count, [user])

    async def _store(self, turn: Turn, events: list[ev.Event], *, done: bool) -> None:
        """Store the steps' records with the posts they owe, in one transaction, then post
        (the reply being shown as it is written stops first: the post takes its place)."""
        await self.streams.settle(turn.row.id)
        posts = [post for event in events for post in self._posts(turn.session, event)]
        records = tuple(record for event in events for record in event.records)
        await self._commit(turn, records, posts, done=done, events=events)

    async def _commit(
        self,
        turn: Turn,
        records: tuple[Item, ...],
        posts: list[Post],
        *,
        done: bool,
        events: list[ev.Event] = (),  # type: ignore[assignment]
    ) -> None:
        agent = next((e.target for e in events if isinstance(e, ev.HandoffSent)), None)
        status: Status | None = "closed" if any(isinstance(e, ev.Closed) for e in events) else None
        cases = tuple(_case(e) for e in events if _opens_case(self.workflow, e))
        queued = [*posts, Post("done", "", self.workflow.agent(self.workflow.start).display)]
        if not (done and self.placeholders):
            queued.pop()
        step = Step(
            turn.session.id,
            items=records,
            agent=agent,
            status=status,
            usage=_usage(events),
            cases=cases,
            posts=tuple(post_to_dict(post) for post in queued),
            turn=TurnMark(turn.row.id, done=done),
            fence=turn.fence,
        )
        stored = await self.store.commit(step)
        assert stored is not None
        self.windows.extend(stored.id, stored.item_count, records)
        turn.session, turn.done = stored, done
        turn.posts.extend(posts)
        if cases:
            opened = await self.store.cases(session_id=stored.id, limit=len(cases))
            turn.cases.extend(reversed(opened))
            for each in opened:
                log.info("session %s: case #%d opened (%s)", stored.key, each.id, each.kind)
        if queued:
            await turn.deliver()

    def _posts(self, session: Session, event: ev.Event) -> list[Post]:
        """The posts a step owes the thread; a reply is queued with the model call that wrote
        it. A handoff's target gets a placeholder of its own (its persona) while it thinks."""
        match event:
            case ev.ModelCalled(agent=agent, reply=reply, shown=True) if (
                reply.text and reply.text.strip()
            ):
                return [Post("reply", reply.text, self.workflow.agent(agent).display, agent)]
            case ev.HandoffSent(source=source, target=target, reason=reason):
                log.info("session %s: %s handed off to %s", session.key, source, target)
                persona = self.workflow.agent(target).display
                text = self._handoff_line(source, target, reason)
                line = (
                    [Post("handoff", text, persona, target)] if self.show_handoffs and text else []
                )
                waiting = (
                    [Post("working", WORKING_TEXT, persona, target)] if self.placeholders else []
                )
                return line + waiting
            case ev.Paused(agent=agent):
                return [Post("notice", PAUSE_NOTICE, self.workflow.agent(agent).display, agent)]
            case ev.Guarded(agent=agent, reply=reply) if reply:
                return [Post("notice", reply, self.workflow.agent(agent).display, agent)]
            case ev.ApprovalAsked(agent=agent):
                return [Post("notice", APPROVAL_NOTICE, self.workflow.agent(agent).display, agent)]
            case ev.TurnStopped(agent=agent, cause=cause, notice=notice):
                log.warning("session %s: turn stopped (%s) at %s", session.key, cause, agent)
                return [Post("notice", notice.text, self.workflow.agent(agent).display, agent)]
            case ev.Closed(agent=agent):
                log.info("session %s closed by the termination condition", session.key)
                return [Post("notice", CLOSED_TEXT, self.workflow.agent(agent).display, agent)]
            case _:
                return []

    def _handoff_line(self, source: str, target: str, reason: str | None) -> str:
        """What the customer sees of a handoff (see `Agent.handoff_notice`): persona names, and
        never a review agent's reason, which is for moderators."""
        to = self.workflow.agent(target)
        if to.handoff_notice is not None:
            return to.handoff_notice
        if to.review:
            return REVIEW_NOTICE
        because = f": {reason}" if reason else ""
        return (
            f"{self.workflow.agent(source).display.name} handed you to {to.display.name}{because}"
        )


def _held(event: ev.Event) -> bool:
    """Whether an event waits for the next one before it is stored: nothing slow comes between
    a reply and the end of its turn, and a reply of calls only is stored with their results."""
    if isinstance(event, ev.AgentMessage):
        return True
    if isinstance(event, ev.Guarded):  # a replaced reply's note is stored with the reply
        return event.stage == "output"
    if isinstance(event, ev.ModelCalled):
        reply = event.reply
        if not event.shown:  # a pipeline's inner step: the next step is slow, store it now
            return False
        if any(not looks_like_handoff(call.name) for call in reply.tool_calls):
            return False  # stored before its tools run: a crash runs them again, with their keys
        return not reply.tool_calls or not (reply.text and reply.text.strip())
    return False


def _outcome(event: ev.Event) -> str | None:
    """How a turn ended, for metrics and traces, if `event` ends it."""
    match event:
        case ev.AwaitingUser():
            return "answered"
        case ev.Closed():
            return "closed"
        case ev.Paused():
            return "paused"
        case ev.TurnStopped(cause=cause):
            return cause  # max_model_calls, max_handoffs, model_error, empty_reply, paused
        case ev.Guarded(stage="input"):
            return "guarded"
        case _:
            return None


def _usage(events: list[ev.Event]) -> ModelUsage | None:
    """The usage of the (at most one) model call among a step's events."""
    called = next((e for e in events if isinstance(e, ev.ModelCalled)), None)
    if called is None:
        return None
    tokens = called.usage or Usage()
    return ModelUsage(called.agent, called.model, tokens.prompt_tokens, tokens.completion_tokens)


def scope_of(session: Session) -> str:
    """What names a conversation in its tool calls' keys (`call_key`): its thread and when it
    began, so that no other conversation, in this store or another, shares a key."""
    return f"{session.key}:{session.created_at:.6f}"


def _opens_case(workflow: Workflow, event: ev.Event) -> bool:
    """A handoff to a review agent, a call that waits for approval or a pipeline's pause
    opens a case."""
    if isinstance(event, ev.HandoffSent):
        return workflow.agent(event.target).review
    return isinstance(event, ev.ApprovalAsked | ev.Paused)


def _case(event: ev.Event) -> NewCase:
    if isinstance(event, ev.ApprovalAsked):
        call = event.call
        return NewCase(
            event.agent, None, PendingCall(call.id, call.name, call.arguments, event.agent)
        )
    if isinstance(event, ev.Paused):
        return NewCase(event.agent, f"Review {event.agent}'s step", kind="pause")
    assert isinstance(event, ev.HandoffSent)
    return NewCase(event.target, event.reason)
