"""`switchboard stats`: how each workflow's conversations went, from the store, read-only.

Per workflow: conversations (open, closed), the customer's messages per conversation (median and
mean), model calls and tokens per conversation, cases by status, the share of conversations each
agent took part in (was asked for a reply at least once), and handoffs per edge.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass

from bot.store import Store
from bot.store.ops_stats import Tallies, tallies

CASE_STATUSES = ("open", "approved", "rejected", "closed")


@dataclass(frozen=True, slots=True)
class Reached:
    """How many of a workflow's conversations an agent took part in."""

    agent: str
    conversations: int
    share: float


@dataclass(frozen=True, slots=True)
class Edge:
    """How many handoffs one edge carried."""

    source: str
    target: str
    handoffs: int


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    """One workflow's figures."""

    workflow: str
    conversations: int
    open: int
    closed: int
    median_turns: float
    mean_turns: float
    model_calls: int
    model_calls_per_conversation: float
    input_tokens_per_conversation: float
    output_tokens_per_conversation: float
    cases: dict[str, int]
    reached: list[Reached]
    handoffs: list[Edge]
    guardrail_trips: dict[str, int]  # "name (stage)" -> trips


async def collect(store: Store, since: float, workflow: str | None = None) -> list[WorkflowStats]:
    """The figures of conversations opened since `since` (of one workflow, if named)."""
    found = await store.driver.read(tallies(since), "tallies")
    return [each for each in summarise(found) if workflow is None or each.workflow == workflow]


def summarise(found: Tallies) -> list[WorkflowStats]:
    """Per-workflow figures from the store's tallies, workflows by name."""
    names = sorted({each.workflow for each in found.conversations})
    summaries = []
    for name in names:
        mine = [each for each in found.conversations if each.workflow == name]
        count = len(mine)
        turns = [each.turns for each in mine]
        calls = sum(each.model_calls for each in mine)
        reached = sorted(
            (
                Reached(agent, n, n / count)
                for (flow, agent), n in found.reached.items()
                if flow == name
            ),
            key=lambda r: (-r.conversations, r.agent),
        )
        edges = sorted(
            (
                Edge(source, target, n)
                for (flow, source, target), n in found.handoffs.items()
                if flow == name
            ),
            key=lambda e: (-e.handoffs, e.source, e.target),
        )
        cases = {status: found.cases.get((name, status), 0) for status in CASE_STATUSES}
        summaries.append(
            WorkflowStats(
                workflow=name,
                conversations=count,
                open=sum(each.status == "open" for each in mine),
                closed=sum(each.status == "closed" for each in mine),
                median_turns=float(statistics.median(turns)),
                mean_turns=statistics.fmean(turns),
                model_calls=calls,
                model_calls_per_conversation=calls / count,
                input_tokens_per_conversation=sum(e.input_tokens for e in mine) / count,
                output_tokens_per_conversation=sum(e.output_tokens for e in mine) / count,
                cases=cases,
                reached=reached,
                handoffs=edges,
                guardrail_trips={
                    f"{guard} ({stage})": n
                    for (flow, guard, stage), n in sorted(found.guarded.items())
                    if flow == name
                },
            )
        )
    return summaries


def to_json(summaries: list[WorkflowStats]) -> str:
    """One JSON object: `workflows`, a list of each workflow's figures."""
    return json.dumps({"workflows": [asdict(each) for each in summaries]}, indent=2) + "\n"


def to_text(summaries: list[WorkflowStats], empty: str) -> str:
    """The figures as a few lines per workflow; `empty` when there are none."""
    if not summaries:
        return empty + "\n"
    blocks = []
    for s in summaries:
        cases = ", ".join(f"{n} {status}" for status, n in s.cases.items())
        lines = [
            f"{s.workflow}: {s.conversations} conversation{'s' * (s.conversations != 1)} "
            f"({s.open} open, {s.closed} closed)",
            f"  customer messages per conversation: median {_number(s.median_turns)}, "
            f"mean {s.mean_turns:.1f}",
            f"  model calls per conversation: {s.model_calls_per_conversation:.1f} "
            f"({s.model_calls:,} in all)",
            f"  tokens per conversation: {s.input_tokens_per_conversation:,.0f} in, "
            f"{s.output_tokens_per_conversation:,.0f} out",
            f"  cases: {cases}",
            "  conversations each agent took part in:",
        ]
        width = max((len(r.agent) for r in s.reached), default=0)
        lines += [
            f"    {r.agent:<{width}}  {r.conversations:>5}  {r.share:>4.0%}" for r in s.reached
        ] or ["    (none)"]
        lines.append("  handoffs per edge:")
        names = [f"{e.source} -> {e.target}" for e in s.handoffs]
        width = max(map(len, names), default=0)
        lines += [
            f"    {name:<{width}}  {e.handoffs:>5}"
            for name, e in zip(names, s.handoffs, strict=True)
        ] or ["    (none)"]
        if s.guardrail_trips:
            trips = ", ".join(f"{what} {n}" for what, n in s.guardrail_trips.items())
            lines.append(f"  guardrail trips: {trips}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"
