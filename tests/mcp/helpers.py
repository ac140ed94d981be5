"""Shared by the MCP tests: the test server as a declared server, workflows, and processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.engine import Agent, HandoffBuilder, Workflow
from bot.engine.agents import McpServer
from bot.engine.tools import Tool, ToolFunction

SERVER = Path(__file__).with_name("server.py")


def stdio(**env: str) -> McpServer:
    """The test server, run over stdio with `env`."""
    return McpServer(sys.executable, (str(SERVER),), env)


def workflow(*agents: Agent) -> Workflow:
    """The agents, the first one starting."""
    return HandoffBuilder(participants=agents).with_start_agent(agents[0]).build()


def agent(name: str, *servers: McpServer, tools: tuple[Tool | ToolFunction, ...] = ()) -> Agent:
    return Agent(name, "Help the customer.", tools=tools, mcp=servers)


def tools(flow: Workflow, name: str) -> dict[str, Tool]:
    """An agent's tools by name."""
    return {tool.name: tool for tool in flow.agent(name).function_tools}


def alive(pid: int) -> bool:
    """Whether the process exists at all: running, or exited and never reaped (a zombie)."""
    return Path(f"/proc/{pid}").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def http_server() -> Iterator[str]:
    """The test server on streamable HTTP in a process of its own; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, "the HTTP test server exited"
                assert time.monotonic() < deadline, "the HTTP test server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)
