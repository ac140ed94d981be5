"""The demo shop's tools (bot/shop.py) served over MCP on stdio: `python -m bot.shop_mcp`.

For a workflow that takes the shop's tools from an MCP server instead of naming the functions:

    mcp:
      - {command: python, args: [-m, bot.shop_mcp], env: {BOT_SHOP_DATABASE: data/shop.db}}

The orders live in `BOT_SHOP_DATABASE` (default data/shop.db), as for the functions. A request the
shop's rules refuse is an error result with the shop's own words, for the model to relay. The
calls' `idempotency_key` is not offered: MCP calls carry none yet, so each call acts.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

NAME = "switchboard-shop"


def build() -> MCPServer:
    """An MCP server with the shop's five tools, not yet running."""
    from bot import shop  # imported when served, not when this module is read

    def asked(function: Callable[..., dict[str, Any]], *args: Any) -> str:
        """The result as compact JSON, as the functions' results reach the model; a refusal of
        the shop's rules as a tool error in the shop's words (not a logged traceback)."""
        try:
            return json.dumps(function(*args), default=str)
        except shop.ShopError as exc:
            raise ToolError(str(exc)) from exc

    def lookup_order(order_id: str) -> str:
        return asked(shop.lookup_order, order_id)

    def start_return(order_id: str, reason: str) -> str:
        return asked(shop.start_return, order_id, reason)

    def issue_refund(order_id: str, amount: float) -> str:
        return asked(shop.issue_refund, order_id, amount)

    def change_address(order_id: str, address: str) -> str:
        return asked(shop.change_address, order_id, address)

    def cancel_order(order_id: str) -> str:
        return asked(shop.cancel_order, order_id)

    server: MCPServer = MCPServer(
        NAME, instructions="Orders, returns and refunds of the demo shop."
    )
    for tool in (lookup_order, start_return, issue_refund, change_address, cancel_order):
        description = _summary(getattr(shop, tool.__name__))
        server.add_tool(tool, description=description, structured_output=False)
    return server


def _summary(function: Callable[..., Any]) -> str:
    """A docstring's first paragraph, on one line: what the model reads."""
    return " ".join((inspect.getdoc(function) or "").split("\n\n")[0].split())


def main() -> None:
    """Serve the shop on stdin and stdout until stdin closes."""
    build().run("stdio")


if __name__ == "__main__":
    main()
