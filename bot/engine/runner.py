"""The runner: one user turn as a loop of steps, yielding typed events.

Each model reply is classified into a small frozen decision and the loop matches on it:

1. Pick the entry agent: the last speaker if return-to-previous is on, else the start agent.
2. Stop with a notice if the turn has used its model calls (the loop guard).
3. Ask the model, offering the agent exactly its own handoff tools and function tools.
4. Classify the reply: `FinalReply`, `ToolRound` (calls, at most one accepted handoff) or
   `EmptyReply`; record it, and yield its text as an `AgentMessage`.
5. `ToolRound`: answer every call in order (run tools; accept the first allowed handoff; refuse
   others with an error naming the allowed targets). With a handoff, the target becomes the agent
   and runs at once (unless the turn's handoffs are used up); without, the same agent goes again.
6. `FinalReply`: an autonomous agent under its turn limit is prompted to continue; otherwise
   the turn ends, `AwaitingUser`.
7. After every step the termination condition, if any, may close the conversation.

The caller persists each event's `records` before asking for the next event, so a crash between
steps leaves a consistent transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from bot import observe
from bot.engine import events as ev
from bot.engine import guardrails, tolerance
from bot.engine.approvals import AWAITING_APPROVAL, STILL_AWAITING_APPROVAL, decided
from bot.engine.handoffs import HandoffInfo, HandoffTool, handoff_reason, looks_like_handoff
from bot.engine.progress import Progress
from bot.engine.text import Bounds, bounded, clean
from bot.engine.tools import ToolOutput
from bot.engine.transcript import (
    AgentReply,
    ContinuationPrompt,
    HandoffRecord,
    Item,
    Notice,
    ToolOutcome,
    UserTurn,
    view_for,
)
from bot.engine.workflow import Workflow
from bot.models.base import (
    ChatMessage,
    ChatModel,
    Chunk,
    ModelError,
    ModelReply,
    ModelRequest,
    ToolCall,
    Usage,
    message_name,
    streamed,
)

log = logging.getLogger(__name__)

LOOP_GUARD_NOTICE = (
    "I'm sorry, this is taking more steps than it should, so I've stopped here. "
    "Please rephrase your request or add a detail, and I'll pick it up from there."
)
MODEL_ERROR_NOTICE = (
    "I'm sorry, I couldn't reach the language model just now. Your message is saved; "
    "please send it again in a moment."
)
PAUSED = "Paused for a review of"  # a pipeline's pause, as the transcript notes it
STILL_PAUSED_NOTICE = (
    "Your request is still with a reviewer; I'll come back to you here as soon as they have "
    "looked at it."
)
HOOK_TIMEOUT_S = 30.0  # an `on_handoff` coroutine that takes longer is given up on
EMPTY_REPLY_NOTICE = "I'm sorry, I have no answer to that. Could you say it another way?"


@dataclass(frozen=True, slots=True)
class FinalReply:
    """Text and no tool call: the agent is done for now."""

    text: str


@dataclass(frozen=True, slots=True)
class EmptyReply:
    """Neither text nor a tool call."""


@dataclass(frozen=True, slots=True)
class ToolRound:
    """Tool calls to answer; `handoff` is the first allowed handoff among them, if any."""

    calls: tuple[ToolCall, ...]
    handoff: tuple[ToolCall, HandoffTool] | None


Decision = FinalReply | EmptyReply | ToolRound


class Runner:
    """Runs user turns of one workflow on one injected model."""

    def __init__(
        self,
        workflow: Workflow,
        model: ChatModel,
        bounds: Bounds | None = None,
        *,
        stream: bool = True,
    ) -> None:
        self.workflow = workflow
        self.model = model
        self.bounds = bounds or Bounds()
        self.stream = stream  # ask for replies as they are written (`Writing` events)
        self._runaway = 2 * (self.bounds.reply + self.bounds.arguments)
        agents = workflow.agents.values()
        handoffs = [tool for agent in workflow.agents for tool in workflow.handoffs(agent)]
        tools = [tool.name for tool in handoffs]
        tools += [tool.name for agent in agents for tool in agent.function_tools]
        reach = {tool.target: tool.name for tool in handoffs}  # an agent, as someone reaches it
        known = tolerance.tool_names(tools, reach)
        self._spellings = {  # per agent: its own handoffs by target, then every other tool
            agent: known
            | tolerance.tool_names(
                (), {tool.target: tool.name for tool in workflow.handoffs(agent)}
            )
            for agent in workflow.agents
        }
        personas = [agent.persona.name for agent in agents if agent.persona is not None]
        self._speakers = (*workflow.agents, *personas, "Moderator")

    async def run(
        self,
        history: Sequence[Item],
        active: str | None,
        *,
        start: int | None = None,
        scope: str = "",
    ) -> AsyncIterator[ev.Event]:
        """Run one user turn, or go on with one that was interrupted.

        `history` holds the turn's user message at index `start` (by default the last item),
        followed by the steps of this turn already stored, if any: the turn goes on from where
        they stop, and a step already stored is never asked of the model again. `scope` names
        the conversation for the keys of its tool calls (`call_key`).
        """
        workflow = self.workflow
        items = list(history)
        begin = len(items) - 1 if start is None else start
        state = Progress.of(workflow, items[begin + 1 :], active, items[begin] if items else None)
        if state.finished:
            return
        opening = items[begin] if begin == len(items) - 1 else None
        if isinstance(opening, UserTurn):
            _, blocked = self._guard("input", state.agent, opening.text)
            if blocked is not None:
                yield blocked
                return
        if workflow.sequential:
            async for event in self._pipeline(items, scope):
                yield event
            return
        agent, pending, answered = state.agent, state.pending, state.answered
        model_calls, handoffs, continuations = state.model_calls, state.handoffs, state.continued
        while True:
            if pending is None:
                spoken: _Spoken | None = None
                async for out in self._speak(agent, items, model_calls):
                    if isinstance(out, _Spoken):
                        spoken = out
                    else:
                        yield out
                if spoken is None:
                    return  # stopped: the model failed, or the loop guard
                model_calls += spoken.calls
                pending, answered = spoken.reply, frozenset()
            held = frozenset(i.source for i in items[begin + 1 :] if isinstance(i, HandoffRecord))
            decision = self._classify(agent, pending, held, items)
            pending = None
            match decision:
                case EmptyReply():
                    yield ev.TurnStopped(agent, "empty_reply", Notice(EMPTY_REPLY_NOTICE))
                    return
                case ToolRound(calls=calls, handoff=accepted):
                    new_handoff = accepted is not None and accepted[0].id not in answered
                    if new_handoff and handoffs >= workflow.limits.max_handoffs:
                        log.warning("loop guard: %d handoffs in one turn, stopping", handoffs)
                        for event in await self._answer(
                            agent, calls, accepted, answered, held, items, scope, refuse_all=True
                        ):
                            items.extend(event.records)
                            yield event
                        yield ev.TurnStopped(agent, "max_handoffs", Notice(LOOP_GUARD_NOTICE))
                        return
                    for event in await self._answer(
                        agent, calls, accepted, answered, held, items, scope
                    ):
                        items.extend(event.records)
                        yield event
                    if accepted is not None:
                        handoffs += new_handoff
                        agent = accepted[1].target
                case FinalReply():
                    autonomy = workflow.autonomy.get(agent)
                    done = continuations.get(agent, 0)
                    if autonomy is None or done >= autonomy.turn_limit:
                        if not await self._terminated(items):
                            yield ev.AwaitingUser(agent)
                            return
                    else:
                        continuations[agent] = done + 1
                        prompt = ContinuationPrompt(agent, autonomy.prompt)
                        items.append(prompt)
                        yield ev.Continued(agent, prompt)
            if await self._terminated(items):
                yield ev.Closed(agent)
                return

    def _request(self, agent: str, items: Sequence[Item]) -> ModelRequest:
        spec = self.workflow.agent(agent)
        tools = tuple(tool.spec for tool in self._offered(agent, items))
        tools += tuple(tool.spec for tool in spec.function_tools)
        messages = view_for(
            agent,
            _instructions(self.workflow, agent),
            self._seen(agent, items),
            pipeline=self.workflow.sequential,
        )
        return ModelRequest(agent, messages, tools, self._model_name(agent), spec.description)

    def _seen(self, agent: str, items: Sequence[Item]) -> Sequence[Item]:
        """What `agent` sees of the transcript: all of it, unless the handoff that brought the
        conversation to it says otherwise (the edge's `history`): then, of what came before the
        handoff, its last messages or nothing (the summary is in the handoff), and always the
        customer's latest message."""
        at = next(
            (
                index
                for index in range(len(items) - 1, -1, -1)
                if isinstance(items[index], HandoffRecord) and items[index].target == agent  # type: ignore[union-attr]
            ),
            None,
        )
        if at is None:
            return items
        record: HandoffRecord = items[at]  # type: ignore[assignment]
        edge = next((t for t in self.workflow.handoffs(record.source) if t.target == agent), None)
        if edge is None or edge.history.mode == "full":
            return items
        before = list(items[:at])
        kept: list[Item] = []
        if edge.history.mode == "last":
            counted = 0
            while before and counted < edge.history.last:
                item = before.pop()
                kept.insert(0, item)
                spoken = isinstance(item, AgentReply) and bool(item.text)
                counted += item.kind in ("user", "moderator") or spoken
        latest = next((i for i in reversed(items) if isinstance(i, UserTurn)), None)
        after = items[at:]
        if latest is not None and all(i is not latest for i in (*kept, *after)):
            kept.insert(0, latest)  # the customer's latest message, always
        return [*kept, *after]

    async def _ask(self, agent: str, items: Sequence[Item]) -> AsyncIterator[ev.Writing | _Asked]:
        """The agent's reply as it is written (`Writing`), then the whole of it, read as meant
        (see `tolerance`), with how many model calls it took (`_Asked`, last). A slip (a
        transfer announced without the call, the bot's own notes or tool results repeated) is
        never shown as the reply: the agent is asked again (what was written so far is taken
        back), and if it slips still, an announced transfer it may make is made, and anything
        else becomes no reply."""
        request = self._request(agent, items)
        reply: ModelReply | None = None
        asked = 0
        guarded_output = bool(self._guards(agent).output)
        targets = self.workflow.targets(agent)
        while True:
            written, raw = "", None
            with observe.model_call(agent, request.model) as observed:  # span, latency, errors
                async with contextlib.aclosing(self._call(request)) as chunks:
                    async for chunk in chunks:
                        if isinstance(chunk, ModelReply):
                            raw = chunk
                        elif len(written) > self._runaway:  # stop reading: it is cut anyway
                            raw = ModelReply(text=written, finish_reason="length")
                            break
                        elif chunk.text:
                            written += chunk.text
                            if not guarded_output:  # shown once the guardrails saw it whole
                                yield ev.Writing(agent, written)
                assert raw is not None
                observed.reply(raw)
            asked += 1
            now = self._read(raw, request, items)
            reply = (
                now
                if reply is None
                else dataclasses.replace(now, usage=_sum(reply.usage, now.usage))
            )
            slip = self._slip(agent, reply, request)
            if slip is None:
                break
            if written and not guarded_output:
                yield ev.Writing(agent, "")
            if asked > self.bounds.transfer_retries:
                log.info("%s slipped again (%s); not shown", agent, slip.kind)
                tools = {tool.target: tool for tool in self._offered(agent, items)}
                meant = tools.get(slip.target or "")
                calls = (ToolCall(f"call_{len(items)}", meant.name),) if meant else ()
                reply = dataclasses.replace(reply, text=None, tool_calls=calls)
                break
            log.info("%s slipped (%s); asking again", agent, slip.kind)
            request = dataclasses.replace(
                request,
                messages=(
                    *request.messages,
                    ChatMessage("assistant", reply.text, message_name(agent)),
                    ChatMessage("system", slip.correction(targets)),
                ),
            )
        guarded = None
        if reply.text:
            text, guarded = self._guard("output", agent, reply.text)
            reply = dataclasses.replace(reply, text=guardrails.OUTPUT_BLOCKED if guarded else text)
        yield _Asked(reply, asked, guarded)

    def _guards(self, agent: str) -> guardrails.Guardrails:
        return self.workflow.guardrails + self.workflow.agent(agent).guardrails

    def _guard(
        self, stage: Literal["input", "output"], agent: str, text: str
    ) -> tuple[str, ev.Guarded | None]:
        """`text` as the guardrails of `agent` (and the workflow) leave it, and the event of
        the one that tripped, if any."""
        guards = self._guards(agent)
        checked, guard, why = guardrails.run(
            guards.input if stage == "input" else guards.output, text
        )
        if guard is None or why is None:
            return checked, None
        note = Notice(guardrails.record(stage, guard, why))
        reply = guardrails.INPUT_BLOCKED if stage == "input" else None
        return checked, ev.Guarded(agent, stage, note, reply)

    def _call(self, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
        """One model call: streamed (text as it comes, then the reply), or the reply at once."""
        if self.stream:
            return streamed(self.model, request)
        return _at_once(self.model, request)

    def showable(self, text: str) -> str:
        """What may be shown now of a reply being written (`Writing.text`): nothing while it
        may turn out to be a tool call written as text; else cleaned, cut to the reply's bound,
        without a speaker's label (the whole reply, when it comes, is read the same way)."""
        if _may_be_a_call(text):
            return ""
        found = _CALL_LATER.search(text)  # a call written after some words: only the words
        if found is not None:
            text = text[: found.start()]
        return tolerance.unlabelled(bounded(text, self.bounds.reply), self._speakers).strip()

    def _slip(self, agent: str, reply: ModelReply, request: ModelRequest) -> tolerance.Slip | None:
        if reply.tool_calls or not reply.text:
            return None
        return tolerance.slip(reply.text, agent, tuple(self.workflow.agents), request.messages)

    def _read(self, reply: ModelReply, request: ModelRequest, items: Sequence[Item]) -> ModelReply:
        """Everything a model writes, read as meant, cleaned and cut to its bounds, before
        anyone sees it; call ids made unique in the transcript."""
        bounds = self.bounds
        if reply.text is None or len(reply.text) <= bounds.arguments:
            reply = tolerance.as_tool_calls(reply, self._spellings[request.agent])
        text = bounded(reply.text, bounds.reply) if reply.text else reply.text
        if text:
            text = tolerance.unlabelled(text, self._speakers)
        used = {
            call.id for item in items if isinstance(item, AgentReply) for call in item.tool_calls
        }
        calls: list[ToolCall] = []
        for index, call in enumerate(reply.tool_calls):
            ident = call.id[:64] or f"call_{index}"
            if ident in used:  # some servers number calls afresh in every reply
                ident = f"call_{len(items)}_{index}"
            used.add(ident)
            arguments = clean(call.arguments, bounds.arguments)[0]  # no hidden or bidi marks
            calls.append(ToolCall(ident, call.name[:64], arguments))
        return dataclasses.replace(reply, text=text or None, tool_calls=tuple(calls))

    def _reason(self, arguments: str) -> str | None:
        reason = handoff_reason(arguments)
        return bounded(reason, self.bounds.reason, "reason") or None if reason else None

    def _model_name(self, agent: str) -> str | None:
        return self.workflow.agent(agent).model

    async def _pipeline(self, items: list[Item], scope: str) -> AsyncIterator[ev.Event]:
        """A pipeline's turn (see `SequentialBuilder`): each agent's step in order, only the last
        one's reply shown; a pause after a step marked for review. Goes on from the steps
        already stored (a crash, a lost lease, a reviewer's verdict)."""
        workflow = self.workflow
        if _waiting(items):
            yield ev.TurnStopped(workflow.start, "paused", Notice(STILL_PAUSED_NOTICE))
            return
        stage = _Stage.of(workflow, items)
        if stage.paused is not None:  # the step is stored; its pause is not yet
            yield self._pause(stage.paused)
            return
        agent, pending, answered, calls = stage.agent, stage.pending, stage.answered, stage.calls
        last = workflow.order[-1]
        while agent is not None:
            if pending is None:
                spoken = None
                async for out in self._speak(agent, items, calls, shown=agent == last):
                    if isinstance(out, _Spoken):
                        spoken = out
                    else:
                        yield out
                if spoken is None:
                    return
                calls += spoken.calls
                pending, answered = spoken.reply, frozenset()
            if pending.tool_calls:
                for event in await self._answer(
                    agent, pending.tool_calls, None, answered, frozenset(), items, scope
                ):
                    items.extend(event.records)
                    yield event
                pending = None
                continue
            if not (pending.text and pending.text.strip()):
                yield ev.TurnStopped(agent, "empty_reply", Notice(EMPTY_REPLY_NOTICE))
                return
            pending = None
            if agent in workflow.review_after:
                yield self._pause(agent)
                return
            agent = workflow.after(agent)
        yield ev.AwaitingUser(last)

    async def _speak(
        self, agent: str, items: list[Item], calls: int, *, shown: bool = True
    ) -> AsyncIterator[ev.Event | _Spoken]:
        """One reply of `agent`, joined to `items`: its events (the text as it is written when
        `shown`, a guardrail's note, the model call, the message), then `_Spoken` last; or a
        `TurnStopped` and nothing more when the model fails or the loop guard holds."""
        if calls >= self.workflow.limits.max_model_calls:
            log.warning("loop guard: %d model calls in one turn, stopping", calls)
            yield ev.TurnStopped(agent, "max_model_calls", Notice(LOOP_GUARD_NOTICE))
            return
        asked: _Asked | None = None
        try:
            async for step in self._ask(agent, items):
                if not isinstance(step, ev.Writing):
                    asked = step
                elif shown:
                    yield step
        except ModelError as exc:
            log.warning("model call for %s failed: %s", agent, exc)
            yield ev.TurnStopped(agent, "model_error", Notice(MODEL_ERROR_NOTICE))
            return
        assert asked is not None
        if asked.guarded is not None:
            yield asked.guarded  # before the reply: a stored step ends on the reply
        reply = asked.reply
        pending = AgentReply(agent, reply.text or None, reply.tool_calls)
        items.append(pending)
        model = reply.model or self._model_name(agent)
        yield ev.ModelCalled(agent, pending, model, reply.usage, shown=shown)
        if shown and reply.text and reply.text.strip():
            yield ev.AgentMessage(agent, reply.text)
        yield _Spoken(pending, asked.calls)

    def _pause(self, agent: str) -> ev.Paused:
        log.info("pipeline paused after %s for a review", agent)
        return ev.Paused(agent, Notice(f"{PAUSED} {agent}'s step."))

    def _offered(self, agent: str, items: Sequence[Item]) -> tuple[HandoffTool, ...]:
        """The handoffs `agent` is offered now: its edges whose condition (`when`) holds."""
        return tuple(tool for tool in self.workflow.handoffs(agent) if tool.enabled(items))

    def _classify(
        self, agent: str, reply: AgentReply, held: frozenset[str], items: Sequence[Item]
    ) -> Decision:
        """What the reply asks for; a handoff back to an agent that already had the conversation
        in this turn is not accepted (it would only go round), nor one whose edge is not
        offered now."""
        if reply.tool_calls:
            allowed = {
                tool.name: tool for tool in self._offered(agent, items) if tool.target not in held
            }
            accepted = next(
                (
                    (call, allowed[call.name])
                    for call in reply.tool_calls
                    if call.name in allowed and allowed[call.name].data(call.arguments)[1] is None
                ),
                None,
            )
            return ToolRound(reply.tool_calls, accepted)
        if reply.text and reply.text.strip():
            return FinalReply(reply.text)
        return EmptyReply()

    async def _answer(
        self,
        agent: str,
        calls: Sequence[ToolCall],
        accepted: tuple[ToolCall, HandoffTool] | None,
        answered: frozenset[str],
        held: frozenset[str],
        items: Sequence[Item],
        scope: str,
        *,
        refuse_all: bool = False,
    ) -> list[ev.ToolCalled | ev.ApprovalAsked | ev.HandoffSent]:
        """Give every call without a stored result one, in order; the accepted handoff becomes
        a `HandoffSent`, a call that needs a moderator's approval an `ApprovalAsked`."""
        events: list[ev.ToolCalled | ev.ApprovalAsked | ev.HandoffSent] = []
        tools = {tool.name: tool for tool in self.workflow.agent(agent).function_tools}
        for call in calls:
            if call.id in answered:
                continue
            if accepted is not None and call is accepted[0] and not refuse_all:
                tool = accepted[1]
                outcome = ToolOutcome(agent, call.id, call.name, f"Handed off to {tool.target}.")
                reason = self._reason(call.arguments)
                if reason:  # the customer may read it: the agent's output guardrails apply
                    checked, tripped = self._guard("output", agent, reason)
                    reason = None if tripped else checked
                data = tool.data(call.arguments)[0]
                with observe.handoff(agent, tool.target, reason):  # span, count by edge
                    failed = await _hook(tool, HandoffInfo(agent, tool.target, reason, data))
                events.append(ev.HandoffSent(agent, tool.target, reason, outcome, data, failed))
                continue
            if call.name in tools and _waiting_call(items, call):
                outcome = ToolOutcome(agent, call.id, call.name, STILL_AWAITING_APPROVAL)
                events.append(ev.ToolCalled(agent, outcome))
                continue
            if call.name in tools and tools[call.name].needs_approval(call.arguments):
                log.info("%s asked for %s: it waits for a moderator's approval", agent, call.name)
                observe.tool_outcome(call.name, "awaiting_approval")
                outcome = ToolOutcome(agent, call.id, call.name, AWAITING_APPROVAL)
                events.append(ev.ApprovalAsked(agent, call, outcome))
                continue
            if call.name in tools:
                with observe.tool_call(agent, call.name, call.id, call.arguments) as observed:
                    output = await tools[call.name].invoke(
                        call.arguments, key=call_key(scope, call.id)
                    )
                    observed.result(output.content, output.is_error)
            else:
                allowed = self._offered(agent, items)
                output = self._refusal(agent, call, accepted, held, allowed, refuse_all)
                observe.tool_outcome(call.name, "refused")
            content = bounded(output.content, self.bounds.tool_result, "result")
            outcome = ToolOutcome(agent, call.id, call.name, content, output.is_error)
            events.append(ev.ToolCalled(agent, outcome))
        return events

    def _refusal(
        self,
        agent: str,
        call: ToolCall,
        accepted: tuple[ToolCall, HandoffTool] | None,
        held: frozenset[str],
        allowed: Sequence[HandoffTool],
        refuse_all: bool,
    ) -> ToolOutput:
        back = next((tool.target for tool in allowed if tool.name == call.name), None) in held
        invalid = next(
            (tool.data(call.arguments)[1] for tool in allowed if tool.name == call.name), None
        )
        if refuse_all and accepted is not None and call is accepted[0]:
            text = "Error: the handoff limit for this turn is reached; no handoff was made."
        elif back:
            others = [tool.target for tool in allowed if tool.target not in held]
            target = next(tool.target for tool in allowed if tool.name == call.name)
            text = (
                f"Error: {target} already had this conversation since the customer's last "
                "message; no handoff was made. Answer the customer yourself"
                + (f", or hand off to {' or '.join(others)}." if others else ".")
            )
        elif invalid is not None:
            text = f"Error: {invalid}. No handoff was made; call it again with valid arguments."
        elif accepted is not None and call.name in {tool.name for tool in allowed}:
            text = (
                "Error: only one handoff per reply; the conversation was already handed to "
                f"{accepted[1].target}."
            )
        elif looks_like_handoff(call.name):
            log.warning("refused handoff %s from %s: not a declared edge", call.name, agent)
            names = ", ".join(tool.name for tool in allowed)
            text = (
                f"Error: {call.name} is not available to {agent}. "
                + (f"Allowed handoffs: {names}." if names else f"{agent} cannot hand off.")
                + " No handoff was made."
            )
        else:
            names = ", ".join(
                [tool.name for tool in allowed]
                + [tool.name for tool in self.workflow.agent(agent).function_tools]
            )
            text = (
                f"Error: there is no tool named {call.name!r}. Available tools: {names or 'none'}."
            )
        return ToolOutput(text, is_error=True)

    async def _terminated(self, items: Sequence[Item]) -> bool:
        """Whether the termination condition holds (a coroutine function's result is awaited)."""
        condition = self.workflow.termination
        if condition is None:
            return False
        verdict = condition(items)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)


def _waiting(items: Sequence[Item]) -> bool:
    """Whether a pipeline's pause is still waiting for its verdict (the latest pause has no
    verdict after it) when a new message comes."""
    for item in reversed(items):
        if isinstance(item, ContinuationPrompt):
            return False
        if isinstance(item, Notice) and item.text.startswith(PAUSED):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Stage:
    """Where a pipeline's turn stands, read from the steps stored since the customer's message
    (a reviewer's verdict, a `ContinuationPrompt`, says whose step is next)."""

    agent: str | None  # whose step is next (None: all done)
    pending: AgentReply | None  # a stored reply whose calls are not all answered
    answered: frozenset[str]
    calls: int
    paused: str | None  # a step that is stored and owes its pause

    @classmethod
    def of(cls, workflow: Workflow, items: Sequence[Item]) -> _Stage:
        since = max((i for i, item in enumerate(items) if isinstance(item, UserTurn)), default=-1)
        agent: str | None = workflow.order[0]
        pending: AgentReply | None = None
        answered: set[str] = set()
        calls, paused = 0, None
        for item in items[since + 1 :]:
            if isinstance(item, ContinuationPrompt):
                agent, pending, paused = item.agent, None, None
            elif isinstance(item, Notice):
                paused = None  # the pause was made (or the turn stopped)
            elif isinstance(item, AgentReply) and item.agent == agent:
                calls += 1
                pending, answered = (item, set()) if item.tool_calls else (None, set())
                if not item.tool_calls:
                    paused = agent if agent in workflow.review_after else None
                    agent = workflow.after(agent)
            elif isinstance(item, ToolOutcome) and pending is not None:
                answered.add(item.call_id)
        if pending is not None and answered >= {call.id for call in pending.tool_calls}:
            pending = None  # every call has its result: the agent is asked again
        return cls(agent, pending, frozenset(answered), calls, paused)


@dataclass(frozen=True, slots=True)
class _Spoken:
    """The end of `_speak`: the reply stored, and how many model calls it took."""

    reply: AgentReply
    calls: int


@dataclass(frozen=True, slots=True)
class _Asked:
    """The end of `_ask`: the reply, and how many model calls it took."""

    reply: ModelReply
    calls: int
    guarded: ev.Guarded | None = None  # an output guardrail replaced the reply


async def _hook(tool: HandoffTool, info: HandoffInfo) -> str | None:
    """Run the edge's `on_handoff`, if any; what went wrong, in one line (else None)."""
    if tool.on_handoff is None:
        return None
    hook = tool.on_handoff
    try:
        if inspect.iscoroutinefunction(hook):
            await asyncio.wait_for(hook(info), HOOK_TIMEOUT_S)
        else:  # a plain function runs in a worker thread: it never blocks other turns
            await asyncio.wait_for(asyncio.to_thread(hook, info), HOOK_TIMEOUT_S)
    except Exception as exc:
        log.warning("on_handoff for %s -> %s failed: %s", info.source, info.target, exc)
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def _at_once(model: ChatModel, request: ModelRequest) -> AsyncGenerator[Chunk, None]:
    yield await model.complete(request)


_CALL_LATER = re.compile(r"<tool_call|```|\{\s*\"|\[\s*\{")


def _waiting_call(items: Sequence[Item], call: ToolCall) -> bool:
    """Whether the same call (tool and arguments) already waits for a moderator's verdict in
    this conversation: it is not asked for twice."""
    asked: dict[str, tuple[str, str]] = {}
    waiting: set[tuple[str, str]] = set()
    for item in items:
        if isinstance(item, AgentReply):
            asked.update((c.id, (c.name, c.arguments)) for c in item.tool_calls)
        elif isinstance(item, ToolOutcome) and item.content == AWAITING_APPROVAL:
            if item.call_id in asked:
                waiting.add(asked[item.call_id])
        elif isinstance(item, ContinuationPrompt):
            waiting = {w for w in waiting if not decided(item.text, w[0])}
    return (call.name, call.arguments) in waiting


def call_key(scope: str, call_id: str) -> str:
    """A tool call's key: the same each time the call is run (after a crash, after an
    approval), and no other call's (`scope` names the conversation)."""
    return f"{scope}:{call_id}"


def _may_be_a_call(text: str) -> bool:
    """Whether text being written may still turn out to be a tool call written as JSON (or in
    a fenced block, or in tags): then nothing of it is shown until it is whole."""
    head = text.lstrip()
    if not head or head[0] in "{<`":
        return True
    if head[0] == "[":  # a list of calls, or a speaker's label ("[Returns] ...")
        rest = head[1:].lstrip()
        return not rest or rest[0] in '{"['
    return False


def _sum(first: Usage | None, second: Usage | None) -> Usage | None:
    if first is None or second is None:
        return first or second
    return Usage(
        first.prompt_tokens + second.prompt_tokens,
        first.completion_tokens + second.completion_tokens,
    )


def _instructions(workflow: Workflow, agent: str) -> str:
    """The agent's instructions, and what it needs to know about the other agents (by name: a
    model repeats tool identifiers to customers)."""
    spec = workflow.agent(agent)
    if workflow.sequential:
        return _step_instructions(workflow, agent)
    parts = [
        f"You are {agent}, one of several agents serving the same support conversation; the "
        "customer sees one support team, and earlier replies may come from the other agents."
    ]
    if spec.instructions:
        parts.append(spec.instructions.strip())
    targets = workflow.targets(agent)
    if targets:
        parts.append(
            f"You can hand the conversation to {_names(targets)}, each with a tool of its own. "
            "When one of them should take over, call that tool and write nothing else: that "
            "agent answers the customer right away. Never tell the customer you will transfer "
            "them without calling the tool, and never mention tools or their names."
        )
    else:
        parts.append("You cannot hand the conversation to anyone else: answer the customer.")
    parts.append("Write only your reply to the customer, with no name or label in front of it.")
    return "\n\n".join(parts)


def _step_instructions(workflow: Workflow, agent: str) -> str:
    """A pipeline agent's instructions: its place in the pipeline, and who reads its result."""
    after = workflow.after(agent)
    parts = [
        f"You are {agent}, one step of a pipeline ({' → '.join(workflow.order)}) that answers "
        "each message of the customer; each step reads the earlier steps' results."
    ]
    spec = workflow.agent(agent)
    if spec.instructions:
        parts.append(spec.instructions.strip())
    if after is not None:
        parts.append(
            f"Write your step's result for {after}, who goes on from it; the customer does not "
            "see it. No name or label in front of it."
        )
    else:
        parts.append("Write the reply to the customer, with no name or label in front of it.")
    return "\n\n".join(parts)


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
