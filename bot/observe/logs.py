"""Log lines as text or as one JSON object per line, with the thread and agent they concern.

The thread (session key) and the speaking agent are context variables, set where a thread's work
and a model call begin (see `hooks`), so every log line written meanwhile carries them without
each call site passing them. Log calls keep %-style arguments and never quote conversation text.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any, Literal

from bot.observe import tracing

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

session_var: ContextVar[str | None] = ContextVar("switchboard_session", default=None)
agent_var: ContextVar[str | None] = ContextVar("switchboard_agent", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `event` (the
    message), and `session`, `agent`, `trace_id`, `span_id`, `exception` where known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        session, agent = session_var.get(), agent_var.get()
        if session is not None:
            line["session"] = session
        if agent is not None:
            line["agent"] = agent
        ids = tracing.current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: Literal["text", "json"]) -> logging.Formatter:
    """The formatter `BOT_LOG_FORMAT` names."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
