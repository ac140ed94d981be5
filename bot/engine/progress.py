"""Where a user turn stands, read from the steps of it already stored, so that a turn cut short
(a crash, a lost lease) goes on from there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.engine import transcript as t
from bot.engine.workflow import Workflow


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a turn stands, read from the steps of it already stored."""

    agent: str
    pending: t.AgentReply | None  # a stored reply whose calls are not all answered, or final
    answered: frozenset[str]  # the ids of its calls whose results are stored
    model_calls: int
    handoffs: int
    continued: dict[str, int]
    finished: bool

    @classmethod
    def of(
        cls,
        workflow: Workflow,
        steps: Sequence[t.Item],
        active: str | None,
        opening: t.Item | None = None,
    ) -> Progress:
        """The agent that goes on, the counts so far, and what is owed (see `Runner.run`). A
        turn that opens with a note to an agent (a verdict on its call) is that agent's."""
        agent = workflow.entry_agent(active)
        if isinstance(opening, t.ContinuationPrompt) and opening.agent in workflow.agents:
            agent = opening.agent
        at = [i for i, item in enumerate(steps) if isinstance(item, t.AgentReply)]
        handoffs = [item for item in steps if isinstance(item, t.HandoffRecord)]
        continued: dict[str, int] = {}
        for item in steps:
            if isinstance(item, t.ContinuationPrompt):
                continued[item.agent] = continued.get(item.agent, 0) + 1
        if handoffs:
            agent = handoffs[-1].target
        pending, answered = None, frozenset[str]()
        last = steps[-1] if steps else None
        if at and isinstance(last, t.AgentReply | t.ToolOutcome):
            reply = steps[at[-1]]
            assert isinstance(reply, t.AgentReply)
            ids = {call.id for call in reply.tool_calls}
            answered = frozenset(
                item.call_id
                for item in steps[at[-1] + 1 :]
                if isinstance(item, t.ToolOutcome) and item.call_id in ids
            )
            agent = reply.agent
            if not ids or answered != ids:
                pending = reply
        finished = isinstance(last, t.Notice)
        return cls(agent, pending, answered, len(at), len(handoffs), continued, finished)
