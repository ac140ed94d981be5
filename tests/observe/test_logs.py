"""Log lines as JSON objects (parsed here), plain text otherwise; and what the hooks cost when
tracing and metrics are off: not even an import."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bot.observe import logs, tracing
from bot.observe.logs import JsonFormatter, agent_var, session_var
from tests.processes import ROOT, clean_env


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("bot.service.turn", logging.INFO, "turn.py", 1, message, args, info)


@pytest.fixture
def bound() -> Iterator[None]:
    session, agent = session_var.set("slack:C1:1700000000.000100"), agent_var.set("Returns")
    yield
    agent_var.reset(agent)
    session_var.reset(session)


def test_a_json_line_has_time_level_logger_event_session_and_agent(bound: None) -> None:
    line = json.loads(JsonFormatter().format(record("%s handed off to %s", "Triage", "Returns")))
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "INFO",
        "logger": "bot.service.turn",
        "event": "Triage handed off to Returns",
        "session": "slack:C1:1700000000.000100",
        "agent": "Returns",
    }


def test_a_json_line_carries_the_traceback_and_the_trace() -> None:
    tracing.use(TracerProvider())
    try:
        assert tracing.tracer is not None
        with tracing.tracer.start_as_current_span("turn") as span:
            text = JsonFormatter().format(record("turn failed", exc=True))
            context = span.get_span_context()
    finally:
        tracing.shutdown()
    assert "\n" not in text  # one line, whatever the traceback
    line = json.loads(text)
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert "session" not in line and "agent" not in line


def test_text_stays_the_default_format() -> None:
    text = logs.formatter("text").format(record("%s handed off to %s", "Triage", "Returns"))
    assert text.endswith(" INFO bot.service.turn: Triage handed off to Returns")


def test_the_console_log_file_is_json_lines_too(tmp_path: Path) -> None:
    env = clean_env(BOT_LOG_FORMAT="json", BOT_DATABASE=str(tmp_path / "c.db"))
    subprocess.run(
        [sys.executable, "-m", "bot", "console", "--thread", "t"],
        input="I want to return my order\n",
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(each) for each in (tmp_path / "console.log").read_text().splitlines()]
    handed = next(each for each in lines if "handed off" in each["event"])
    assert handed["session"] == "console:local:t" and handed["agent"] == "Triage"
    assert all("return my order" not in each["event"] for each in lines)


def test_a_bad_log_format_is_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "sessions"],
        cwd=ROOT,
        env=clean_env(BOT_LOG_FORMAT="yaml"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: BOT_LOG_FORMAT: Input should be 'text' or 'json'")


@pytest.mark.parametrize("module", ["bot.engine", "bot.service", "bot.observe"])
def test_off_the_hooks_import_neither_sdk(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules "
        "if m.startswith(('opentelemetry', 'prometheus_client', 'aiohttp', 'bot.store'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.replace("'", '"'))
    allowed = ("bot.store",) if module == "bot.service" else ()  # the service uses the store
    assert [name for name in found if not name.startswith(allowed)] == []
