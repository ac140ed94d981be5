"""`probe`, `describe` (for `check`) and `doctor`: each declared server started or reached, its
tools listed, then stopped; a failure is one line saying why, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bot.doctor import diagnose
from bot.engine.agents import McpServer
from bot.engine.mcp import McpError, describe, probe
from bot.settings import load_settings
from tests.mcp.helpers import SERVER, agent, free_port, stdio, workflow

NAMES = ["echo", "lookup", "refuse", "slow", "pid", "secret", "picture", "orders.search"]
MISSING = McpServer("/nonexistent/mcp-server", env={"API_KEY": "hunter2"})
LISTED = "8 tools (echo, lookup, refuse, slow, pid, secret, picture, orders.search)"


async def test_probe_lists_the_servers_own_tool_names() -> None:
    assert await probe(stdio()) == NAMES


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        (MISSING, "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/"),
        (McpServer(sys.executable, ("-c", "pass")), "MCPError: Connection closed"),
        (
            McpServer(sys.executable, ("-c", "import sys; sys.stdin.read()")),
            "no answer within 0.5s",
        ),
        (McpServer(url=f"http://127.0.0.1:{free_port()}/mcp"), "ConnectError: "),
    ],
)
async def test_probe_says_in_one_line_why_a_server_fails(server: McpServer, reason: str) -> None:
    with pytest.raises(McpError) as failed:
        await probe(server, 0.5)
    assert str(failed.value).startswith(reason)
    assert "\n" not in str(failed.value) and "hunter2" not in str(failed.value)


async def test_describe_gives_a_line_per_server() -> None:
    flow = workflow(agent("Orders", stdio(), MISSING), agent("Returns", stdio()))
    lines = await describe(flow)
    assert lines[0] == f"ok    mcp {sys.executable} {SERVER}: {LISTED}"
    assert lines[1].startswith("FAIL  mcp /nonexistent/mcp-server: FileNotFoundError: ")
    assert len(lines) == 2  # the server both agents declare, once


async def test_doctor_checks_each_declared_server(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(
        f"""
start: Orders
agents:
  - name: Orders
    instructions: Help.
    mcp:
      - {{command: "{sys.executable}", args: ["{SERVER}"]}}
      - {{command: /nonexistent/mcp-server, env: {{API_KEY: hunter2}}}}
""",
        encoding="utf-8",
    )
    settings = load_settings(
        {"BOT_WORKFLOW": str(path), "BOT_DATABASE": str(tmp_path / "bot.db")}, env_file=None
    )
    lines = [str(finding) for finding in await diagnose(settings)]
    assert lines[0].startswith(f"ok    workflow: {path}: 1 agents")
    assert lines[1] == f"ok    mcp {sys.executable} {SERVER}: {LISTED}"
    assert lines[2] == (
        "FAIL  mcp /nonexistent/mcp-server: FileNotFoundError: [Errno 2] No such file or "
        "directory: '/nonexistent/mcp-server'"
    )
    assert lines[3].startswith("ok    database: ")
    assert not any("hunter2" in line for line in lines)


async def test_doctor_says_nothing_of_mcp_for_a_workflow_without_servers(tmp_path: Path) -> None:
    settings = load_settings(
        {"BOT_WORKFLOW": "helpdesk", "BOT_DATABASE": str(tmp_path / "bot.db")}, env_file=None
    )
    lines = [str(finding) for finding in await diagnose(settings)]
    assert not any(" mcp " in line for line in lines)
