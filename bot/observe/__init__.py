"""Seeing what the bot does: traces, metrics, health checks, structured logs, usage figures.

What the engine and the service call as things happen is here (`hooks`), and costs next to
nothing when tracing and metrics are off: neither the OpenTelemetry SDK nor `prometheus_client`
is imported then. The rest is imported where it is used: `tracing` (set up from `OTEL_*`),
`metrics` (the Prometheus registry), `server` (`/metrics`, `/healthz`, `/readyz`), `logs` (text
or JSON lines) and `stats` (`switchboard stats`).
"""

from bot.observe.hooks import (
    bind_session,
    count_turn,
    handoff,
    model_call,
    post,
    tool_call,
    tool_outcome,
    turn,
)

__all__ = [
    "bind_session",
    "count_turn",
    "handoff",
    "model_call",
    "post",
    "tool_call",
    "tool_outcome",
    "turn",
]
