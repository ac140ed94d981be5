"""A small MCP server for the tests, written with the SDK: `python server.py` serves stdio,
`python server.py --http PORT` streamable HTTP on 127.0.0.1. Run by path, never imported."""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("switchboard-tests")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def lookup(order_id: str) -> dict[str, str]:
    """Look up an order."""
    return {"order_id": order_id, "status": "shipped"}


@server.tool()
def refuse(why: str) -> str:
    """Fail on purpose, with a reason the model can read."""
    raise ToolError(f"cannot do that: {why}")


@server.tool()
async def slow(seconds: float) -> str:
    """Take a while."""
    await asyncio.sleep(seconds)
    return "finally"


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@server.tool()
def secret() -> str:
    """The value of MCP_TEST_SECRET, and whether the parent's PATH came through."""
    return f"{os.environ.get('MCP_TEST_SECRET')} {'PATH' in os.environ}"


@server.tool(structured_output=False)
def picture() -> list[object]:
    """A caption and an image."""
    return ["a red dot", Image(data=b"\x89PNG fake", format="png")]


@server.tool(name="orders.search", description="Search orders. " + "x" * 2000)
def search(query: str) -> str:
    return f"found {query}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
