"""`python -m bot stats` on conversations that really ran through the service (scripted model,
SQLite file), as a real process on the database, read-only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bot.engine.loader import load_workflow, parse_workflow
from bot.models import ModelReply, ModelRequest, ToolCall, Usage
from bot.observe.stats import collect
from bot.service import ConversationService, IncomingMessage
from bot.store import Store, sqlite_store
from bot.store.ops_stats import Figures, figures
from bot.testing import ScriptedModel
from tests.processes import bot, clean_env

WORKFLOWS = Path(__file__).parents[2] / "workflows"


def routed(request: ModelRequest) -> ModelReply:
    """Triage sends returns to Returns, invoices to Billing (helpdesk) and the rest to Orders;
    Returns escalates "twelve"."""
    said = next(m.content for m in reversed(request.messages) if m.role == "user") or ""
    usage = Usage(100, 10)
    if request.agent == "Triage":
        target = "Returns" if "return" in said else "Billing" if "invoice" in said else "Orders"
        call = ToolCall(f"c{len(request.messages)}", f"handoff_to_{target}", "{}")
        return ModelReply(tool_calls=(call,), usage=usage)
    if request.agent == "Returns" and "twelve" in said:
        call = ToolCall(f"c{len(request.messages)}", "handoff_to_Fraud", '{"reason": "many"}')
        return ModelReply(tool_calls=(call,), usage=usage)
    return ModelReply(text=f"{request.agent} here.", usage=usage)


async def converse(store: Store) -> None:
    """Four ecommerce conversations (2, 1, 2 and 1 customer messages, besides an "end"; one
    ended, one escalated) and one helpdesk conversation."""
    conversations = {
        "a": ["I want to return my shoes", "thanks"],
        "b": ["where is my parcel?"],
        "c": ["return please", "I returned twelve pairs", "end"],
        "d": ["hello"],
    }
    model = ScriptedModel(respond=routed)
    service = ConversationService(load_workflow(WORKFLOWS / "ecommerce.yaml"), model, store)
    for thread, messages in conversations.items():
        for text in messages:
            await service.handle(IncomingMessage("test", "C1", thread, text))
    helpdesk = ConversationService(load_workflow(WORKFLOWS / "helpdesk.yaml"), model, store)
    await helpdesk.handle(IncomingMessage("test", "C1", "h", "my invoice is wrong"))


async def fill(database: Path) -> None:
    async with sqlite_store(database) as store:
        await converse(store)


async def test_the_figures_on_both_backends(any_store: Store) -> None:
    await converse(any_store)
    expected = Figures(outbox_backlog=0, dead_letters=0, open_cases=1, active_conversations=4)
    for _ in range(100):  # on PostgreSQL the last post may still be on its way: wait for it
        found = await any_store.driver.read(figures(time.time() - 3600), "figures")
        if found == expected:
            break
        await asyncio.sleep(0.05)
    assert found == expected
    assert (
        await any_store.driver.read(figures(time.time() + 60), "figures")
    ).active_conversations == 0
    (shop,) = await collect(any_store, 0.0, "ecommerce")
    assert (shop.conversations, shop.open, shop.closed, shop.model_calls) == (4, 3, 1, 11)
    assert shop.median_turns == 1.5 and shop.cases["open"] == 1
    assert [(e.source, e.target, e.handoffs) for e in shop.handoffs] == [
        ("Triage", "Orders", 2),
        ("Triage", "Returns", 2),
        ("Returns", "Fraud", 1),
    ]
    assert [(r.agent, r.conversations) for r in shop.reached] == [
        ("Triage", 4),
        ("Orders", 2),
        ("Returns", 2),
        ("Fraud", 1),
    ]
    assert await collect(any_store, time.time() + 60) == []


async def stats(database: Path, *args: str) -> tuple[int, str, str]:
    process = await bot("stats", "--database", str(database), *args, env=clean_env())
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_stats_per_workflow(tmp_path: Path) -> None:
    database = tmp_path / "s.db"
    await fill(database)
    code, out, err = await stats(database, "--workflow", "ecommerce")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "ecommerce: 4 conversations (3 open, 1 closed)",
        "  customer messages per conversation: median 1.5, mean 1.5",
        "  model calls per conversation: 2.8 (11 in all)",
        "  tokens per conversation: 275 in, 28 out",
        "  cases: 1 open, 0 approved, 0 rejected, 0 closed",
        "  conversations each agent took part in:",
        "    Triage       4  100%",
        "    Orders       2   50%",
        "    Returns      2   50%",
        "    Fraud        1   25%",
        "  handoffs per edge:",
        "    Triage -> Orders       2",
        "    Triage -> Returns      2",
        "    Returns -> Fraud       1",
    ]

    code, out, _ = await stats(database, "--json")
    assert code == 0
    found = {each["workflow"]: each for each in json.loads(out)["workflows"]}
    assert sorted(found) == ["ecommerce", "helpdesk"]
    shop = found["ecommerce"]
    assert shop["median_turns"] == 1.5 and shop["model_calls"] == 11
    assert {"source": "Returns", "target": "Fraud", "handoffs": 1} in shop["handoffs"]
    assert found["helpdesk"]["conversations"] == 1


async def test_stats_on_an_empty_period_and_a_missing_database(tmp_path: Path) -> None:
    database = tmp_path / "s.db"
    await fill(database)
    code, out, _ = await stats(database, "--workflow", "content")
    assert (code, out) == (0, "No conversations of workflow content.\n")
    code, _, err = await stats(tmp_path / "none.db")
    assert code == 1 and err.startswith("error: no database at ")


async def test_guardrail_trips_are_counted_on_both_backends(any_store: Store) -> None:
    flow = parse_workflow(
        "start: A\nguardrails: {input: [{blocked_words: [lottery]}]}\n"
        "agents: [{name: A, instructions: a}]\n"
    )
    service = ConversationService(flow, ScriptedModel([]), any_store)
    for text in ("win the lottery", "lottery again"):
        await service.handle(IncomingMessage("test", "C1", "g", text))
    (found,) = await collect(any_store, 0.0, flow.name)
    assert found.guardrail_trips == {"blocked_words (input)": 2}
