"""`ConversationService`: from a platform event to stored turns and posts under personas.

The durable pipeline, once for every platform:

1. `receive` stores an inbound message, owed a turn, and only then may the adapter tell the
   platform it arrived (a retry of a stored message is recognised; if it is still owed, its
   thread is kicked).
2. The thread's worker (`Threads`, one per thread, under its lease) delivers what the thread's
   outbox holds, then takes the owed message the platform stamped first, lets the rules decide
   what it stores (`Rules`), and runs its turn (`Turns`), each step stored with its posts.
3. A sweep, at start-up and then periodically, kicks every thread with an owed message or a due
   post: interrupted turns go on, unsent posts go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from bot import observe
from bot.engine import approvals
from bot.engine.guardrails import redact
from bot.engine.runner import Runner, call_key
from bot.engine.text import Bounds, bounded, clean
from bot.engine.transcript import ContinuationPrompt
from bot.engine.workflow import Workflow
from bot.models.base import ChatModel
from bot.service.delivery import UNDELIVERABLE_TEXT, Poster
from bot.service.messages import IncomingMessage, Post, TurnResult
from bot.service.moderation import ACTIONS, Action, ActionResult, CaseCard, Moderation
from bot.service.platform import Click, Platform
from bot.service.rules import Rules
from bot.service.streaming import Streamer
from bot.service.threads import Threads
from bot.service.turn import Turn, Turns, scope_of
from bot.service.window import WindowBudget
from bot.store.protocols import SessionStore
from bot.store.values import (
    CallResult,
    EventId,
    Fence,
    Inbound,
    InboxRow,
    LeaseLost,
    PendingCall,
    Received,
    Session,
    SessionKey,
    Step,
    StoreError,
    TurnMark,
    card_lane,
)

log = logging.getLogger(__name__)

STORE_DOWN_TEXT = (
    "I'm sorry, I can't reach my conversation store right now, so I can't answer safely. "
    "Please try again in a few minutes."
)
REFUSAL = "Only moderators can act on review cases."


class ConversationService:
    """The one entry point adapters call; a thread's turns run one at a time, in order."""

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
        settle_s: float = 0.0,
        start_settle_s: float = 0.0,
        lease_s: float = 15.0,
        sweep_s: float = 1.0,
        bounds: Bounds | None = None,
        retention_s: float = 7 * 86400,
        stream: bool = True,
        stream_interval: float = 1.0,
    ) -> None:
        self.workflow = workflow
        self.store = store
        self.platform = platform
        self.max_message_chars = max_message_chars
        self.settle_s = settle_s
        self.start_settle_s = start_settle_s if platform and platform.redelivers else 0.0
        self._started = time.time()
        self.sweep_s = sweep_s
        self.retention_s = retention_s
        self._pruned = 0.0
        placeholders = platform is not None and platform.placeholders
        self.rules = Rules(workflow, placeholders, max_message_chars)
        runner = Runner(workflow, model, bounds or Bounds(), stream=stream)
        streams = Streamer(
            platform, store, runner.showable, interval=stream_interval, enabled=stream
        )
        self.turns = Turns(
            runner, store, window or WindowBudget(), show_handoffs, placeholders, streams
        )
        apology = Post("notice", UNDELIVERABLE_TEXT, self.rules.persona)
        self.poster = Poster(platform, store, self._card, apology, backoff=retry_delay)
        self.threads = Threads(store, self._work, lease_s=lease_s)
        self.moderation = Moderation(workflow, store, self.threads)
        self._results: dict[int, asyncio.Future[TurnResult]] = {}
        self._later: set[asyncio.Task[ActionResult]] = set()
        self._told: OrderedDict[object, None] = OrderedDict()  # who heard "store down" lately

    async def receive(self, message: IncomingMessage) -> Received:
        """Store a message, owed a turn; when this returns, the platform may be told it arrived.

        Raises `StoreError` when the message could not be stored (the platform should deliver it
        again); the user is told once that the bot cannot answer safely now.
        """
        text, cut = clean(message.text, self.max_message_chars)
        if self.workflow.redacts_input:  # masked before anything is stored
            text = redact(text)
        event = EventId(message.platform, message.event_id) if message.event_id else None
        stamp = message.stamp or f"{time.time():020.6f}"
        inbound = Inbound(message.key, message.author, text, message.mentioned, stamp, event, cut)
        try:
            received = await self.store.receive(inbound, only_if_held=not message.mentioned)
        except StoreError as exc:
            log.error("store failed for %s: %s", message.key, exc)
            await self._store_down(message.key, message.event_id)
            raise
        if received.row is not None or received.owed:
            self.threads.kick(message.key)
        return received

    async def handle(self, message: IncomingMessage) -> TurnResult:
        """Receive a message and wait for its answer (the console, tests, scripts)."""
        try:
            received = await self.receive(message)
        except StoreError:
            return TurnResult(None, failed=True)
        if received.row is None:
            return TurnResult(None, duplicate=received.duplicate, ignored=not received.duplicate)
        future = self._results.setdefault(received.row, asyncio.get_running_loop().create_future())
        self.threads.kick(message.key)
        result = await future
        await self.threads.idle(message.key)
        for case in result.cases:  # their cards are posted too before this returns
            await self.threads.idle(card_lane(case.key.platform, case.id))
        return result

    async def click(self, click: Click) -> ActionResult:
        """A moderator's button or command: check rights, act once, then the thread's
        announcement and the case's card go out from the outbox."""
        platform = self.platform
        action = click.action
        if action not in ACTIONS or not click.case.isdigit():
            result = ActionResult(False, f"There is no case #{click.case[:20]}.")
        elif platform is not None and not await platform.is_moderator(click):
            log.warning("refused %s on case %s by a non-moderator", action, click.case)
            result = ActionResult(False, REFUSAL)
        elif click.id and not await self.store.claim_event(EventId(platform_of(self), click.id)):
            result = ActionResult(False, "That click was already taken into account.")
        else:
            chosen: Action = action
            result = await self.moderation.act(
                int(click.case), chosen, click.actor, agent=click.agent, note=click.note
            )
        if not result.ok or result.case is None:
            if platform is not None:
                await platform.tell(click, result.message)
            return result
        case = result.case
        for key in (case.key, card_lane(case.key.platform, case.id)):
            self.threads.kick(key)
            await self.threads.idle(key)
        return result

    def later(self, click: Click) -> None:
        """Act on a click in the background (the platform was told at once it arrived)."""
        task = asyncio.create_task(self.click(click))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def sweep(self) -> int:
        """Kick every thread of this platform with work left; how many (start-up, then often).
        Once an hour, forget what is done and older than the retention period."""
        now = time.time()
        if now - self._pruned > 3600:
            self._pruned = now
            removed = await self.store.prune(now - self.retention_s)
            if removed:
                log.info("pruned %d rows older than %.0f days", removed, self.retention_s / 86400)
        name = self.platform.name if self.platform is not None else None
        return 0 if name is None else await self.threads.sweep(name, now)

    async def catch_up(
        self,
        read: Callable[[SessionKey, str], Awaitable[list[IncomingMessage]]],
        *,
        hours: float = 24.0,
    ) -> int:
        """Read back what a platform will not deliver again: the messages of the open threads
        active in the last `hours`, after the newest one stored; how many were stored now."""
        name = self.platform.name if self.platform is not None else None
        if name is None:
            return 0
        stored = 0
        for key, stamp in await self.store.last_stamps(name, time.time() - hours * 3600):
            try:
                messages = await read(key, stamp)
            except Exception as exc:
                log.warning("thread %s: could not read back (%s)", key, type(exc).__name__)
                continue
            for message in messages:
                stored += (await self.receive(message)).row is not None
        return stored

    async def stop(self, within: float) -> bool:
        """Take no more work; let running turns finish (at most `within` seconds). What is left
        stays owed, for the next start."""
        if self._later:
            await asyncio.wait(set(self._later), timeout=within)
        return await self.threads.drain(within)

    async def owns(self, key: SessionKey) -> bool:
        """Whether a thread has an open conversation."""
        session = await self.store.find_session(key)
        return session is not None and session.status == "open"

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

    async def _work(self, key: SessionKey, fence: Fence | None) -> None:
        """A thread's worker: deliver its posts, then answer its owed messages, in order."""
        observe.bind_session(key)  # its log lines name the thread
        while True:
            await self.poster.deliver(key, fence)
            if self.threads.stopping:
                return
            row = await self.store.next_owed(key)
            if row is None:
                return
            wait = min(row.received_at + self.settle_s - time.time(), self.settle_s)
            starting = self._started + self.start_settle_s - time.time()
            if row.received_at < self._started + self.start_settle_s:
                wait = max(wait, starting)  # just started: the platform delivers missed ones
            if wait > 0:  # an earlier message may still be on its way: wait for it
                await asyncio.sleep(wait)
                continue
            try:
                result = await self._answer(row, fence)
            except BaseException as exc:  # cancelled too: whoever waits is not left hanging
                self._settle(row, exc)
                if isinstance(exc, StoreError) and not isinstance(exc, LeaseLost):
                    await self._store_down(key, row.message.event)
                raise
            self._settle(row, result)

    async def _answer(self, row: InboxRow, fence: Fence | None) -> TurnResult:
        """Admit an owed message (if its turn has not started) and run its turn."""
        key = row.message.key
        preface: tuple[Post, ...] = ()
        if row.case_id is not None and row.seq is None:
            session = await self._finish_call(row, row.case_id, fence)
            if session is None:
                return TurnResult(None, ignored=True)
            if session.taken_over_by is not None:  # a moderator holds the thread: the agent
                await self.store.finish(row, fence)  # reads the verdict when it is handed back
                return TurnResult(session, taken_over=True)
            row = dataclasses.replace(row, seq=session.item_count)
        elif row.seq is None:
            admitted = await self.store.admit(
                row, fence, lambda found: self.rules.decide(row, found)
            )
            verdict, session = admitted.verdict, admitted.session
            if verdict.outcome != "turn" or session is None or verdict.user is None:
                observe.count_turn(verdict.outcome)  # ended, replied, taken_over, ignored
                await self.poster.deliver(key, fence)
                ignored = verdict.outcome not in ("ended",)
                taken_over = verdict.outcome == "taken_over"
                return TurnResult(session, verdict.posts, ignored=ignored, taken_over=taken_over)
            if session.item_count == 1:
                log.info("session %s opened (%s)", key, self.workflow.name)
            self.turns.admitted(session, verdict.user)
            await self.poster.deliver(key, fence)  # the placeholder, while the model thinks
            row = dataclasses.replace(row, session_id=session.id, seq=session.item_count)
            preface = tuple(post for post in verdict.posts if post.kind != "working")
        else:
            found = await self.store.get_session(row.session_id or 0)
            if found is None:
                await self.store.finish(row, fence)
                return TurnResult(None, ignored=True)
            session = found
            log.info("session %s: going on with an interrupted turn", key)
        turn = Turn(session, row, fence, lambda: self.poster.deliver(key, fence))
        working = self.platform.working(key) if self.platform else contextlib.nullcontext()
        async with working:
            await self.turns.run(turn)
        for case in turn.cases:
            self.threads.kick(card_lane(case.key.platform, case.id))
        return TurnResult(turn.session, (*preface, *turn.posts), cases=tuple(turn.cases))

    async def _finish_call(
        self, row: InboxRow, case_id: int, fence: Fence | None
    ) -> Session | None:
        """A decided case's job: run an approved call once (with the case's key, the same
        after a crash), then store what the agent whose turn it is now is told, which starts
        that turn. None when there is nothing left to do (the case or the conversation is
        gone)."""
        case = await self.store.get_case(case_id)
        session = await self.store.get_session(row.session_id or 0)
        closed = session is None or session.status == "closed"  # nothing runs there
        if case is None or session is None or closed or case.kind == "review":
            await self.store.finish(row, fence)
            return None
        result = None
        approved = case.status == "approved"
        if case.call is not None:
            call = case.call
            agent = call.agent
            if approved:
                key = call_key(scope_of(session), call.id)  # the same key after a crash
                result = case.result or await self._run(call, key)
                note = approvals.approved(call.tool, result.content, result.is_error)
            else:
                note = approvals.rejected(call.tool)
        else:
            following = self.workflow.after(case.agent)
            agent = following if approved and following is not None else case.agent
            note = approvals.reviewed(case.agent, approved, agent)
        log.info("case #%d (%s, %s): %s goes on", case.id, case.kind, case.status, agent)
        step = Step(
            session.id,
            items=(ContinuationPrompt(agent, note),),
            agent=agent if agent in self.workflow.agents else None,
            result=None if result is None else (case.id, result),
            turn=TurnMark(row.id, started=True),
            fence=fence,
        )
        stored = await self.store.commit(step)
        if stored is not None:
            self.turns.admitted(stored, step.items[0])
        return stored

    async def _run(self, call: PendingCall, key: str) -> CallResult:
        tools = {tool.name: tool for tool in self.workflow.agent(call.agent).function_tools}
        tool = tools.get(call.tool) if call.agent in self.workflow.agents else None
        if tool is None:
            return CallResult(f"Error: {call.tool} is no longer available to {call.agent}.", True)
        with observe.tool_call(call.agent, call.tool, call.id, call.arguments) as observed:
            output = await tool.invoke(call.arguments, key=key)
            observed.result(output.content, output.is_error)
        content = bounded(output.content, self.turns.runner.bounds.tool_result, "result")
        return CallResult(content, output.is_error)

    def _settle(self, row: InboxRow, outcome: TurnResult | BaseException) -> None:
        future = self._results.pop(row.id, None)
        if future is None or future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_result(TurnResult(None, failed=True))
        else:
            future.set_result(outcome)

    async def _store_down(self, key: SessionKey, event: object) -> None:
        """Tell the thread once that the store is unreachable (posted directly: the outbox
        lives in that store)."""
        if self.platform is None or (key, event) in self._told:
            return
        self._told[(key, event)] = None
        while len(self._told) > 1000:
            self._told.popitem(last=False)
        post = Post("notice", STORE_DOWN_TEXT, self.rules.persona)
        try:
            await self.platform.send(key, post, tag="store-down")
        except Exception as exc:
            log.warning("could not post to %s: %s", key, type(exc).__name__)

    async def _card(self, case_id: int) -> CaseCard | None:
        """A case's card as it stands now (the poster shows it when the card's turn comes)."""
        case = await self.store.get_case(case_id)
        return None if case is None else await self.moderation.card(case)


def platform_of(service: ConversationService) -> str:
    """The name of the platform a service posts to ("none" without one)."""
    return service.platform.name if service.platform is not None else "none"
