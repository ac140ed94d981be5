"""The demo shop served over MCP (`python -m bot.shop_mcp`): the shop's functions as tools,
without the bot's `idempotency_key`, refusals in the shop's words, state in BOT_SHOP_DATABASE."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from bot import shop
from bot.engine.agents import McpServer
from bot.engine.mcp import connected
from tests.mcp.helpers import agent, tools, workflow

SERVED = ("lookup_order", "start_return", "issue_refund", "change_address", "cancel_order")


async def test_the_shop_over_mcp(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    server = McpServer(sys.executable, ("-m", "bot.shop_mcp"), {"BOT_SHOP_DATABASE": str(database)})
    async with connected(workflow(agent("Orders", server))) as ready:
        found = tools(ready, "Orders")
        assert tuple(found) == SERVED
        for name, tool in found.items():
            assert "idempotency_key" not in json.dumps(tool.spec.parameters)
            summary = (inspect.getdoc(getattr(shop, name)) or "").split("\n\n")[0]
            assert tool.spec.description == " ".join(summary.split())
        assert found["issue_refund"].spec.parameters["required"] == ["order_id", "amount"]

        order = json.loads((await found["lookup_order"].invoke('{"order_id": "1042"}')).content)
        assert order["status"] == "delivered" and order["customer"] == "Maya Patel"

        refused = await found["cancel_order"].invoke('{"order_id": "1001"}')
        assert refused.is_error
        assert refused.content.endswith("so it cannot be cancelled")
        assert "Traceback" not in refused.content

        done = await found["cancel_order"].invoke('{"order_id": "1015"}')
        assert json.loads(done.content)["status"] == "cancelled"
        again = await found["lookup_order"].invoke('{"order_id": "1015"}')
        assert json.loads(again.content)["status"] == "cancelled"
    assert database.exists()  # the server's BOT_SHOP_DATABASE, from its `env`
