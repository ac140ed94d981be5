"""`ConversationService`: every conversation rule, from a platform event to posts under personas.

Adapters hand it `IncomingMessage`s and `Click`s and implement `Platform`; the service decides
everything else, once for all platforms: dedupe, "end", who may start a conversation, the
moderator holding a thread, running the turn, what to post as whom, cases and their cards, and
the honest reply when the store itself fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, cast

from bot.engine.agents import Persona
from bot.engine.transcript import Item, ModeratorMessage, Notice, UserTurn
from bot.engine.workflow import Workflow
from bot.models.base import ChatModel
from bot.service.delivery import Poster
from bot.service.inputs import clean_text, limit_text
from bot.service.lanes import Lanes
from bot.service.messages import IncomingMessage, Post, TurnResult, post_to_dict
from bot.service.moderation import ACTIONS, Action, ActionResult, Moderation
from bot.service.platform import Click, Platform
from bot.service.turn import Turns
from bot.service.window import WindowBudget
from bot.store.protocols import SessionStore
from bot.store.values import (
    Admitted,
    Case,
    EventId,
    NewSession,
    Session,
    SessionKey,
    Step,
    StoreError,
)

log = logging.getLogger(__name__)

STORE_DOWN_TEXT = (
    "I'm sorry, I can't reach my conversation store right now, so I can't answer safely. "
    "Please try again in a few minutes."
)
EMPTY_TEXT = "I didn't get any text there. Could you type your question?"
LONG_TEXT = "Your message was long, so I read only its first {limit:,} characters."
ENDED_TEXT = "Conversation ended. Your next message to me starts a new one."
NOTHING_TO_END_TEXT = "There is no open conversation here to end. Mention me to start one."
REFUSAL = "Only moderators can act on review cases."
END_WORDS = frozenset({"end", "/end", "end conversation", "close"})

Outcome = Literal["turn", "ended", "empty", "ignored", "taken_over"]


def is_end_command(text: str) -> bool:
    """Whether a message asks to close the conversation ("end", "close", ...)."""
    return text.lower().strip(" .!") in END_WORDS


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What the rules make of a message: the step to store, what follows, and any reply."""

    step: Step | None
    outcome: Outcome
    reply: str | None = None
    item: Item | None = None


class ConversationService:
    """The one entry point adapters call; runs turns of one thread strictly one at a time."""

    def __init__(
        self,
        workflow: Workflow,
        model: ChatModel,
        store: SessionStore,
        platform: Platform | None = None,
        *,
        window: WindowBudget | None = None,
        show_handoffs: bool = True,
        max_message_chars: int = 4000,
        retry_delay: float = 1.0,
    ) -> None:
        self.workflow = workflow
        self.store = store
        self.platform = platform
        self.max_message_chars = max_message_chars
        self.lanes = Lanes()
        self.turns = Turns(
            workflow, model, store, window or WindowBudget(), show_handoffs=show_handoffs
        )
        self.poster = Poster(platform, store, self.lanes, backoff=retry_delay)
        self.moderation = Moderation(workflow, store, self.lanes)
        self._in_flight = 0

    def warnings(self) -> list[str]:
        """What an operator should hear at start-up: review agents with nowhere to post cards."""
        platform = self.platform
        if platform is None or platform.cards_setting is None:
            return []
        if not any(agent.review for agent in self.workflow.agents.values()):
            return []
        return [
            f"{platform.cards_setting} is not set: escalations still open cases (`python -m bot "
            f"cases`), but no card reaches moderators in {platform.name.capitalize()}"
        ]

    @property
    def start_persona(self) -> Persona:
        return self.workflow.agent(self.workflow.start).display

    async def handle(self, message: IncomingMessage) -> TurnResult:
        """Answer one incoming message exactly once (a duplicate is recognised and dropped)."""
        async with self._tracked():
            try:
                return await self._handle(message)
            except StoreError as exc:
                log.error("store failed for %s: %s", message.key, exc)
                await self._send_directly(
                    message, Post("notice", STORE_DOWN_TEXT, self.start_persona)
                )
                return TurnResult(None, failed=True)

    async def click(self, click: Click) -> ActionResult:
        """A moderator's button or command: check rights, act, update the card, announce."""
        async with self._tracked():
            platform = self.platform
            action = cast(Action, click.action)
            if action not in ACTIONS or not click.case.isdigit():
                result = ActionResult(False, f"There is no case #{click.case[:20]}.")
            elif platform is not None and not await platform.is_moderator(click):
                log.warning("refused %s on case %s by a non-moderator", click.action, click.case)
                result = ActionResult(False, REFUSAL)
            else:
                result = await self.moderation.act(
                    int(click.case), action, click.actor, agent=click.agent
                )
            if not result.ok or result.case is None:
                if platform is not None:
                    await platform.tell(click, result.message)
                return result
            await self._show_card(result.case)
            if platform is not None:
                for post in result.posts:
                    await platform.send(result.case.key, post)
            return result

    async def owns(self, key: SessionKey) -> bool:
        """Whether a thread has an open conversation."""
        session = await self.store.find_session(key)
        return session is not None and session.status == "open"

    async def drain(self, within: float = 30.0) -> bool:
        """Wait for every operation in flight (turns, "end", moderator actions) to finish;
        False if `within` seconds ran out first."""
        deadline = time.monotonic() + within
        while self._in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def _handle(self, message: IncomingMessage) -> TurnResult:
        text, cut = limit_text(clean_text(message.text), self.max_message_chars)
        event = EventId(message.platform, message.event_id) if message.event_id else None
        async with self.lanes.hold(message.key), self.store.thread_lock(message.key):
            admitted = await self.store.admit(
                message.key, event, lambda found: self._decide(message, text, event, found)
            )
            if admitted is None or admitted.duplicate:
                return TurnResult(admitted.session if admitted else None, duplicate=True)
            verdict = admitted.verdict
            if verdict.reply is not None:
                post = Post("notice", verdict.reply, self.start_persona)
                await self._reply(message, admitted, post)
                return TurnResult(admitted.session, (post,), ignored=verdict.outcome != "ended")
            session = admitted.session
            if verdict.outcome != "turn" or session is None or verdict.item is None:
                return TurnResult(session, ignored=True, taken_over=verdict.outcome == "taken_over")
            if session.item_count == 1:
                log.info("session %s opened (%s)", message.key, self.workflow.name)
            if cut:
                note = Post(
                    "notice", LONG_TEXT.format(limit=self.max_message_chars), self.start_persona
                )
                await self._send_directly(message, note)
            return await self._turn(message, session, verdict.item, admitted.backlog)

    def _decide(
        self, message: IncomingMessage, text: str, event: EventId | None, found: Session | None
    ) -> _Verdict:
        """The rules for an incoming message, given the thread's latest session."""
        session = found if found is not None and found.status == "open" else None
        if session is None and not message.mentioned:
            return _Verdict(None, "ignored")  # chatter in a thread the bot does not hold
        if not text:
            return _Verdict(Step(event=event), "empty", EMPTY_TEXT)
        if is_end_command(text):
            if session is None:
                return _Verdict(Step(event=event), "empty", NOTHING_TO_END_TEXT)
            ended = Notice(f"Conversation ended by user {message.author}.")
            post = post_to_dict(Post("notice", ENDED_TEXT, self.start_persona))
            step = Step(session.id, event=event, items=(ended,), status="closed", posts=(post,))
            return _Verdict(step, "ended", ENDED_TEXT)
        user = UserTurn(text, message.author)
        if session is None:
            new = NewSession(message.key, self.workflow.name, self.workflow.start)
            return _Verdict(Step(opens=new, event=event, items=(user,)), "turn", item=user)
        holder = session.taken_over_by
        if holder is not None:
            # A moderator holds the thread: keep the message, relay nothing to the model.
            kept: Item = ModeratorMessage(holder, text) if message.author == holder else user
            return _Verdict(Step(session.id, event=event, items=(kept,)), "taken_over")
        return _Verdict(Step(session.id, event=event, items=(user,)), "turn", item=user)

    async def _turn(
        self, message: IncomingMessage, session: Session, user: Item, backlog: bool
    ) -> TurnResult:
        platform = self.platform
        self.poster.queued_behind(session.id, backlog)  # posts left by another process go first
        persona = self.workflow.agent(self.workflow.entry_agent(session.active_agent)).display
        placeholder = None
        if platform is not None and not self.poster.blocked(session.id):
            placeholder = await self._placeholder(platform, message, persona)
        delivery = self.poster.delivery(session.id, message.key, placeholder)
        working = platform.working(message.key) if platform else contextlib.nullcontext()
        async with working:
            session, cases = await self.turns.run(session, user, delivery)
        await delivery.finish()
        for case in cases:
            await self._show_card(case)
        return TurnResult(session, tuple(delivery.posts), cases=tuple(cases))

    async def _placeholder(
        self, platform: Platform, message: IncomingMessage, persona: Persona
    ) -> str | None:
        """A "working on it" post the turn's first post replaces (a nicety: failures pass)."""
        try:
            return await platform.send(message.key, Post("working", "working on it…", persona))
        except Exception as exc:
            log.warning("no placeholder in %s: %s", message.key, type(exc).__name__)
            return None

    async def _reply(
        self, message: IncomingMessage, admitted: Admitted[_Verdict], post: Post
    ) -> None:
        """The service's own reply ("ended", an empty message): queued with the step, or sent."""
        session = admitted.session
        if session is None or admitted.verdict.outcome != "ended":
            await self._send_directly(message, post)
            return
        delivery = self.poster.delivery(session.id, message.key, None)
        await delivery.publish(post)
        await delivery.finish()

    async def _send_directly(self, message: IncomingMessage, post: Post) -> None:
        """A post that cannot wait in the outbox (there is no session, or no store)."""
        if self.platform is None:
            return
        try:
            await self.platform.send(message.key, post)
        except Exception as exc:
            log.warning("could not post to %s: %s", message.key, type(exc).__name__)

    async def _show_card(self, case: Case) -> None:
        """Post the case's card for moderators, or update the one already posted."""
        if self.platform is None:
            return
        card = await self.moderation.card(case)
        try:
            ref = await self.platform.send_card(card, case.card)
        except Exception as exc:
            log.warning("case #%d: card not posted (%s)", case.id, type(exc).__name__)
            return
        if ref is not None and ref != case.card:
            await self.store.set_case_card(case.id, ref)
