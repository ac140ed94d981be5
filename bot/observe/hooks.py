"""The calls the engine and the service make as things happen: a turn, a model call, a tool call,
a handoff, a post. Each is a context manager that opens a span (when tracing is on), times and
counts (when metrics are on), and names the thread and agent for log lines; with both off it
does no more than that naming.

Spans follow the OpenTelemetry GenAI conventions where they apply (`chat {model}` with
`gen_ai.request.model`, `gen_ai.usage.input_tokens`, ...; `execute_tool {name}`). Message text
(the customer's, the model's, tool arguments and results, handoff reasons) goes into attributes
only with `BOT_TRACE_CONTENT=true`; no attribute ever holds a secret.

A turn's span is the current span while the turn runs, so what happens inside it (model calls,
tools, handoffs, posts) are its children. A model call's span is never made current: the runner
yields in the middle of it, and a context attached there would leak into the caller's steps.

The hooks are classes named like functions, as `contextlib.suppress` is: `with observe.turn(...)`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Protocol

from bot.models.base import ModelError, ModelReply
from bot.observe import tracing
from bot.observe.logs import agent_var, session_var

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from bot.observe.metrics import Metrics

_metrics: Metrics | None = None


class _Key(Protocol):
    @property
    def platform(self) -> str: ...


class _Session(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def key(self) -> _Key: ...
    @property
    def workflow(self) -> str: ...
    @property
    def active_agent(self) -> str: ...


def use_metrics(metrics: Metrics | None) -> None:
    """Count into `metrics` from now on (None: count nothing)."""
    global _metrics
    _metrics = metrics


def bind_session(key: object) -> None:
    """Name the thread in the log lines of the current task (a thread's worker)."""
    session_var.set(str(key))


def count_turn(outcome: str) -> None:
    """A user message handled without a model turn (`ended`, `replied`, `taken_over`, ...)."""
    if _metrics is not None:
        _metrics.turns.labels(outcome=outcome).inc()


def tool_outcome(name: str, outcome: str) -> None:
    """A tool call that did not run: `refused` (not offered) or `awaiting_approval`."""
    if _metrics is not None:
        _metrics.tool_calls.labels(tool=_metrics.tool(name), outcome=outcome).inc()


def error_kind(exc: BaseException) -> str:
    """A failed model call in one word: `http_429`, `timeout`, `connection`, `invalid_reply`
    (the server answered something unusable), or `internal` (a bug of ours)."""
    if not isinstance(exc, ModelError):
        return "internal"
    cause = exc.__cause__
    status = getattr(cause, "status_code", None)
    if isinstance(status, int):
        return f"http_{status}"
    name = type(cause).__name__ if cause is not None else ""
    if "Timeout" in name:
        return "timeout"
    if "Connection" in name:
        return "connection"
    return "invalid_reply"


class turn:
    """One user turn: the current span while it runs (`turn {workflow}`), timed and counted by
    `outcome` (set it as the turn ends; `failed` on an exception, `interrupted` when cancelled)."""

    __slots__ = ("_context", "_names", "_session", "_span", "_started", "_text", "outcome")

    def __init__(self, session: _Session, text: str | None = None) -> None:
        self._session = session
        self._text = text
        self.outcome = "answered"
        self._span: Span | None = None
        self._context: object = None

    def __enter__(self) -> turn:
        session = self._session
        self._names = (session_var.set(str(session.key)), agent_var.set(session.active_agent))
        self._started = time.perf_counter()
        if tracing.tracer is not None:
            from opentelemetry import context, trace

            attributes: dict[str, Any] = {
                "switchboard.workflow": session.workflow,
                "switchboard.session.key": str(session.key),
                "switchboard.session.id": session.id,
                "switchboard.platform": session.key.platform,
                "gen_ai.conversation.id": str(session.id),
            }
            if tracing.content and self._text is not None:
                attributes["switchboard.message.text"] = self._text
            self._span = tracing.tracer.start_span(
                f"turn {session.workflow}", attributes=attributes
            )
            self._context = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self.outcome = "failed" if isinstance(exc, Exception) else "interrupted"
        if _metrics is not None:
            _metrics.turns.labels(outcome=self.outcome).inc()
            _metrics.turn_seconds.observe(time.perf_counter() - self._started)
        if self._span is not None:
            from opentelemetry import context

            self._span.set_attribute("switchboard.turn.outcome", self.outcome)
            _failed(self._span, exc)
            self._span.end()
            context.detach(self._context)  # type: ignore[arg-type]
        session, agent = self._names  # as they were before the turn
        agent_var.reset(agent)
        session_var.reset(session)


class model_call:
    """One model call for `agent`: a `chat {model}` client span (not made current), timed by
    agent and model; a `ModelError` is counted by kind (`error_kind`)."""

    __slots__ = ("_agent", "_model", "_span", "_started")

    def __init__(self, agent: str, model: str | None) -> None:
        self._agent = agent
        self._model = model
        self._span: Span | None = None

    def __enter__(self) -> model_call:
        agent_var.set(self._agent)  # the turn's scope puts it back
        self._started = time.perf_counter()
        if tracing.tracer is not None:
            from opentelemetry.trace import SpanKind

            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.agent.name": self._agent,
            }
            if self._model:
                attributes["gen_ai.request.model"] = self._model
            name = f"chat {self._model}" if self._model else "chat"
            self._span = tracing.tracer.start_span(
                name, kind=SpanKind.CLIENT, attributes=attributes
            )
        return self

    def reply(self, reply: ModelReply) -> None:
        """What the model answered: its model, usage and finish reason (text only with
        `BOT_TRACE_CONTENT`)."""
        usage = reply.usage
        self._model = reply.model or self._model
        if _metrics is not None and usage is not None:
            _metrics.tokens.labels(agent=self._agent, type="input").inc(usage.prompt_tokens)
            _metrics.tokens.labels(agent=self._agent, type="output").inc(usage.completion_tokens)
        span = self._span
        if span is None:
            return
        span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason])
        if reply.model:
            span.set_attribute("gen_ai.response.model", reply.model)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if tracing.content:
            parts: list[dict[str, Any]] = []
            if reply.text:
                parts.append({"type": "text", "content": reply.text})
            parts += [
                {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
                for c in reply.tool_calls
            ]
            output = [{"role": "assistant", "parts": parts}]
            span.set_attribute("gen_ai.output.messages", json.dumps(output, ensure_ascii=False))

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        failed = isinstance(exc, Exception)
        if _metrics is not None:
            model = self._model or "default"
            elapsed = time.perf_counter() - self._started
            _metrics.model_seconds.labels(agent=self._agent, model=model).observe(elapsed)
            if failed:
                assert exc is not None
                _metrics.model_errors.labels(kind=error_kind(exc)).inc()
        if self._span is not None:
            if failed:
                assert exc is not None
                self._span.set_attribute("error.type", error_kind(exc))
            _failed(self._span, exc)
            self._span.end()


class tool_call:
    """One function tool run for `agent`: an `execute_tool {name}` span, counted by tool and
    outcome (`ok`, or `error` when the result is an error)."""

    __slots__ = ("_agent", "_arguments", "_context", "_name", "_outcome", "_span")

    def __init__(self, agent: str, name: str, call_id: str, arguments: str) -> None:
        self._agent = agent
        self._name = name
        self._arguments = (call_id, arguments)
        self._outcome = "ok"
        self._span: Span | None = None
        self._context: object = None

    def __enter__(self) -> tool_call:
        if tracing.tracer is not None:
            from opentelemetry import context, trace

            call_id, arguments = self._arguments
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": self._name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.agent.name": self._agent,
            }
            if tracing.content:
                attributes["gen_ai.tool.call.arguments"] = arguments
            span = tracing.tracer.start_span(f"execute_tool {self._name}", attributes=attributes)
            self._span = span
            self._context = context.attach(trace.set_span_in_context(span))
        return self

    def result(self, content: str, is_error: bool) -> None:
        """The tool's result (its text only with `BOT_TRACE_CONTENT`)."""
        self._outcome = "error" if is_error else "ok"
        if self._span is not None:
            if is_error:
                self._span.set_attribute("error.type", "tool_error")
            if tracing.content:
                self._span.set_attribute("gen_ai.tool.call.result", content)

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception):
            self._outcome = "error"
        if _metrics is not None:
            tool = _metrics.tool(self._name)
            _metrics.tool_calls.labels(tool=tool, outcome=self._outcome).inc()
        if self._span is not None:
            from opentelemetry import context

            self._span.set_attribute("switchboard.tool.outcome", self._outcome)
            _failed(self._span, exc, self._outcome == "error")
            self._span.end()
            context.detach(self._context)  # type: ignore[arg-type]


class handoff:
    """`source` hands the conversation to `target` (the edge's `on_handoff` runs inside): a
    `handoff {source} -> {target}` span, counted by edge."""

    __slots__ = ("_context", "_reason", "_source", "_span", "_target")

    def __init__(self, source: str, target: str, reason: str | None) -> None:
        self._source, self._target, self._reason = source, target, reason
        self._span: Span | None = None
        self._context: object = None

    def __enter__(self) -> handoff:
        if _metrics is not None:
            _metrics.handoffs.labels(source=self._source, target=self._target).inc()
        if tracing.tracer is not None:
            from opentelemetry import context, trace

            attributes: dict[str, Any] = {
                "switchboard.handoff.source": self._source,
                "switchboard.handoff.target": self._target,
                "gen_ai.agent.name": self._source,
            }
            if tracing.content and self._reason:
                attributes["switchboard.handoff.reason"] = self._reason
            name = f"handoff {self._source} -> {self._target}"
            self._span = tracing.tracer.start_span(name, attributes=attributes)
            self._context = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self._span is not None:
            from opentelemetry import context

            _failed(self._span, exc)
            self._span.end()
            context.detach(self._context)  # type: ignore[arg-type]


class post:
    """One post sent to the platform from the outbox: a `post {kind}` client span."""

    __slots__ = ("_span",)

    def __init__(self, key: _Key, kind: str, post_id: int, text: str | None = None) -> None:
        self._span: Span | None = None
        if tracing.tracer is not None:
            from opentelemetry.trace import SpanKind

            attributes: dict[str, Any] = {
                "switchboard.platform": key.platform,
                "switchboard.session.key": str(key),
                "switchboard.post.kind": kind,
                "switchboard.post.id": post_id,
            }
            if tracing.content and text:
                attributes["switchboard.post.text"] = text
            self._span = tracing.tracer.start_span(
                f"post {kind}", kind=SpanKind.CLIENT, attributes=attributes
            )

    def __enter__(self) -> post:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if self._span is not None:
            if isinstance(exc, Exception):
                self._span.set_attribute("error.type", type(exc).__name__)
            _failed(self._span, exc)
            self._span.end()


def _failed(span: Span, exc: BaseException | None, failed: bool = False) -> None:
    """Mark a span as failed: by an exception (its type only: its text may quote anything, a
    `ModelError`'s excepted, which is written to be safe), or by `failed`."""
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, Exception):
        safe = str(exc) if isinstance(exc, ModelError) else type(exc).__name__
        span.set_status(Status(StatusCode.ERROR, safe))
    elif failed:
        span.set_status(Status(StatusCode.ERROR))
