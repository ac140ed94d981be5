"""Prometheus metrics on a registry of their own, counted only in processes that serve them.

Counters and histograms are moved by the hooks as things happen; the figures that live in the
store (outbox backlog, dead letters, open cases, active conversations) are gauges read from the
store when `/metrics` is scraped (`server.Probe`), never counted on the write path. Off (the
console, the commands), `prometheus_client` is not even imported.

Label values are bounded: agents, edges and tools are the workflow's own (a tool name a model made
up counts as `other`), outcomes and error kinds a short fixed list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from bot.engine.workflow import Workflow

TURN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
OUTCOMES = ("answered", "closed", "model_error", "max_model_calls", "max_handoffs", "failed")
OTHER = "other"


@dataclass(eq=False)
class Metrics:
    """Every metric the bot exposes, on its own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tools: frozenset[str] = frozenset()  # tool names used as label values; others are `other`

    def __post_init__(self) -> None:
        r = self.registry
        self.turns = Counter(
            "switchboard_turns", "User messages handled, by outcome.", ["outcome"], registry=r
        )
        self.turn_seconds = Histogram(
            "switchboard_turn_duration_seconds",
            "Time to run one user turn (model calls, tools, storing, posting).",
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "switchboard_model_call_duration_seconds",
            "Time of one model call, streamed or not.",
            ["agent", "model"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "switchboard_model_errors",
            "Model calls that failed after the client's retries, by kind.",
            ["kind"],
            registry=r,
        )
        self.tokens = Counter(
            "switchboard_model_tokens",
            "Tokens of model calls, by agent and type (input, output).",
            ["agent", "type"],
            registry=r,
        )
        self.handoffs = Counter(
            "switchboard_handoffs", "Handoffs made, by edge.", ["source", "target"], registry=r
        )
        self.tool_calls = Counter(
            "switchboard_tool_calls",
            "Tool calls by tool and outcome (ok, error, refused, awaiting_approval).",
            ["tool", "outcome"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "switchboard_outbox_backlog", "Posts waiting in the outbox.", registry=r
        )
        self.dead_letters = Gauge(
            "switchboard_dead_letters", "Posts the platform refused for good.", registry=r
        )
        self.open_cases = Gauge(
            "switchboard_open_cases", "Cases waiting for a moderator.", registry=r
        )
        self.active_conversations = Gauge(
            "switchboard_active_conversations",
            "Open conversations with a message in the last 24 hours.",
            registry=r,
        )
        self.store_up = Gauge(
            "switchboard_store_up", "1 when the store answered the last scrape, else 0.", registry=r
        )
        self.info = Gauge(
            "switchboard_workflow_info",
            "The workflow this process serves.",
            ["workflow"],
            registry=r,
        )

    def tool(self, name: str) -> str:
        """`name` as a label value: a tool of the workflow, else `other`."""
        return name if name in self.tools else OTHER


def for_workflow(workflow: Workflow) -> Metrics:
    """Metrics for a process serving `workflow`, each declared edge and the usual outcomes at 0
    from the start (a series that appears only when it first moves hides its first increase)."""
    # No `_created` series beside every counter: noise to most dashboards (a process-wide flag).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    handoffs = [tool for agent in workflow.agents for tool in workflow.handoffs(agent)]
    tools = [tool.name for agent in workflow.agents.values() for tool in agent.function_tools]
    metrics = Metrics(tools=frozenset([*tools, *(tool.name for tool in handoffs)]))
    metrics.info.labels(workflow=workflow.name).set(1)
    for outcome in OUTCOMES:
        metrics.turns.labels(outcome=outcome)
    for agent in workflow.agents:
        for tool in workflow.handoffs(agent):
            metrics.handoffs.labels(source=agent, target=tool.target)
    return metrics
