"""Agents take tools from real MCP servers (the SDK's, over stdio and streamable HTTP): listed
with their schemas, called with a timeout, every failure a result the model reads, and every
process stopped on the way out."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from bot.engine import ToolCalled
from bot.engine.agents import McpServer
from bot.engine.loader import parse_workflow
from bot.engine.mcp import McpTool, connected, probe
from bot.engine.tools import Tool
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn
from tests.mcp.helpers import SERVER, agent, alive, http_server, stdio, tools, workflow

pytestmark = pytest.mark.asyncio(loop_scope="module")


def note(text: str) -> str:
    """Write a note on the order."""
    return f"noted: {text}"


def echo(text: str) -> str:
    """The agent's own echo."""
    return f"own echo: {text}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def orders() -> AsyncIterator[dict[str, Tool]]:
    """One agent's tools from one stdio server, connected once for the tests that only call."""
    flow = workflow(agent("Orders", stdio(MCP_TEST_SECRET="s3cret"), tools=(note,)))
    async with connected(flow) as ready:
        yield tools(ready, "Orders")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with http_server() as found:
        yield found


async def test_tools_come_with_the_servers_names_schemas_and_descriptions(
    orders: dict[str, Tool],
) -> None:
    assert set(orders) == {
        "note",
        "echo",
        "lookup",
        "refuse",
        "slow",
        "pid",
        "secret",
        "picture",
        "orders_search",
    }
    spec = orders["lookup"].spec
    assert spec.description == "Look up an order."
    assert spec.parameters["type"] == "object"
    assert spec.parameters["properties"]["order_id"]["type"] == "string"
    assert spec.parameters["required"] == ["order_id"]
    assert orders["pid"].spec.parameters["properties"] == {}
    search = orders["orders_search"]  # "orders.search" on the server: not a name OpenAI takes
    assert isinstance(search, McpTool) and search.remote == "orders.search"
    assert search.spec.description.startswith("Search orders. xxx")
    assert len(search.spec.description) <= 1000
    assert not orders["lookup"].needs_approval('{"order_id": "1"}')


@pytest.mark.parametrize(
    ("name", "arguments", "content", "is_error"),
    [
        ("echo", '{"text": "hi"}', "echo: hi", False),
        ("lookup", '{"order_id": "A1"}', '"status": "shipped"', False),
        ("orders_search", '{"query": "blue mug"}', "found blue mug", False),
        ("picture", "{}", "a red dot\n[image, image/png, 9 bytes: not shown]", False),
        ("secret", "", "s3cret True", False),  # its `env`, over the bot's own environment
        ("refuse", '{"why": "no stock"}', "cannot do that: no stock", True),
        ("echo", "{}", "text", True),  # the server checks the arguments
        ("echo", "{oops", "Error: arguments are not valid JSON (Expecting property name", True),
        ("echo", "[1, 2]", "Error: arguments must be a JSON object.", True),
        ("note", '{"text": "fragile"}', "noted: fragile", False),  # the agent's own tool
    ],
)
async def test_a_call_returns_text_or_an_error_the_model_reads(
    orders: dict[str, Tool], name: str, arguments: str, content: str, is_error: bool
) -> None:
    output = await orders[name].invoke(arguments)
    assert content in output.content
    assert output.is_error is is_error
    if is_error:
        assert output.content.startswith("Error")


async def test_a_slow_tool_times_out_and_the_server_goes_on(orders: dict[str, Tool]) -> None:
    slow = orders["slow"]
    assert isinstance(slow, McpTool) and slow.timeout == 30  # `call_timeout` of `connected`
    started = time.monotonic()
    output = await dataclasses.replace(slow, timeout=0.5).invoke('{"seconds": 5}')
    assert output.is_error and output.content == "Error: slow did not finish within 0.5 seconds."
    assert time.monotonic() - started < 2
    assert (await orders["echo"].invoke('{"text": "still here"}')).content == "echo: still here"


async def test_one_server_for_two_agents_starts_once_and_stops_on_exit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.engine.mcp")
    shared = stdio()
    flow = workflow(agent("Orders", shared), agent("Returns", shared, tools=(echo,)))
    async with connected(flow) as ready:
        orders, returns = tools(ready, "Orders"), tools(ready, "Returns")
        first = (await orders["pid"].invoke("{}")).content
        assert (await returns["pid"].invoke("{}")).content == first
        assert (await returns["echo"].invoke('{"text": "x"}')).content == "own echo: x"
        assert (await orders["echo"].invoke('{"text": "x"}')).content == "echo: x"
        assert flow.agent("Orders").tools == ()  # the workflow given is left as it was
        assert alive(int(first))
    assert not alive(int(first))  # stopped and reaped: no zombie
    assert caplog.text.count("server.py: 8 tools") == 1
    assert "agent Returns already has a tool named 'echo'; the server's is skipped" in caplog.text
    assert "tool 'orders.search' is offered as 'orders_search'" in caplog.text


async def test_a_server_that_cannot_start_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    missing = McpServer("/nonexistent/mcp-server", ("--port", "1"), {"API_KEY": "hunter2"})
    exits = McpServer(sys.executable, ("-c", "pass"))
    silent = McpServer(sys.executable, ("-c", "import sys; sys.stdin.read()"))  # never answers
    flow = workflow(agent("Orders", missing, exits, silent, tools=(note,)))
    started = time.monotonic()
    async with connected(flow, start_timeout=0.5) as ready:
        assert list(tools(ready, "Orders")) == ["note"]
        assert (await tools(ready, "Orders")["note"].invoke('{"text": "ok"}')).is_error is False
    assert time.monotonic() - started < 3
    warnings = [r.getMessage() for r in caplog.records if "cannot start" in r.getMessage()]
    assert len(warnings) == 3, warnings
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert warnings[0].startswith("mcp /nonexistent/mcp-server --port 1: cannot start (")
    assert "No such file or directory" in warnings[0]
    assert any(f"{sys.executable} -c pass: cannot start" in line for line in warnings)
    assert any("no answer within 0.5s" in line for line in warnings)
    assert all(line.endswith("its agents go on without its tools") for line in warnings)
    assert "hunter2" not in caplog.text


async def test_a_killed_server_is_an_error_then_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with connected(workflow(agent("Orders", stdio()))) as ready:
        found = tools(ready, "Orders")
        first = int((await found["pid"].invoke("{}")).content)
        os.kill(first, signal.SIGKILL)
        output = await found["echo"].invoke('{"text": "hello?"}')
        assert output.is_error
        assert output.content.startswith("Error: echo failed: its server stopped answering (")
        assert output.content.endswith("It is connected again on the next call.")
        second = int((await found["pid"].invoke("{}")).content)
        assert second != first and alive(second)
        assert not alive(first)
    assert not alive(second)
    assert "connection lost" in caplog.text


async def test_streamable_http(url: str) -> None:
    assert "orders.search" in await probe(McpServer(url=url))
    async with connected(workflow(agent("Orders", McpServer(url=url))), call_timeout=2) as ready:
        found = tools(ready, "Orders")
        assert found["lookup"].spec.parameters["required"] == ["order_id"]
        assert (await found["echo"].invoke('{"text": "over http"}')).content == "echo: over http"
        refused = await found["refuse"].invoke('{"why": "closed"}')
        assert refused.is_error and "cannot do that: closed" in refused.content


async def test_a_turn_through_the_runner_calls_an_mcp_tool() -> None:
    flow = parse_workflow(
        f"""
start: Orders
agents:
  - name: Orders
    instructions: Answer questions about orders.
    mcp:
      - {{command: {json.dumps(sys.executable)}, args: [{json.dumps(str(SERVER))}]}}
"""
    )
    model = ScriptedModel([call("lookup", {"order_id": "A1"}), say("Order A1 has shipped.")])
    async with connected(flow) as ready:
        events, items = await run_turn(ready, model, "Where is my order A1?")
    offered = {spec.name: spec for spec in model.requests[0].tools}
    assert offered["lookup"].parameters["properties"]["order_id"]["type"] == "string"
    called = [event for event in events if isinstance(event, ToolCalled)]
    assert len(called) == 1 and called[0].outcome.name == "lookup"
    assert json.loads(called[0].outcome.content) == {"order_id": "A1", "status": "shipped"}
    assert not called[0].outcome.is_error
    assert model.requests[1].messages[-1].content == called[0].outcome.content
    assert items[-1].text == "Order A1 has shipped."  # type: ignore[attr-defined]


async def test_a_workflow_without_servers_is_given_back_as_it_is() -> None:
    flow = workflow(agent("Orders", tools=(note,)))
    async with connected(flow) as ready:
        assert ready is flow
