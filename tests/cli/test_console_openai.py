"""The canonical e-commerce conversation through the console subprocess on a real model client.

The console runs as its own process with OPENAI_BASE_URL pointing at a local Chat Completions
server in this test's event loop; the openai client inside the console does the talking.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.chat_completions import ChatCompletionsServer, canonical
from tests.processes import bot, clean_env


async def run_console(server: ChatCompletionsServer, db: Path, stdin: str) -> str:
    env = clean_env(OPENAI_BASE_URL=server.base_url, OPENAI_MODEL="local-model")
    process = await bot("console", "--database", str(db), "--thread", "shop", env=env)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_canonical_conversation_through_the_console(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    async with ChatCompletionsServer(respond=canonical) as server:
        first = await run_console(
            server, db, "I want to return my order\nOrder 42\nIt never arrived, just refund me\n"
        )
        # A restart: the follow-up goes to the last specialist.
        second = await run_console(server, db, "Here are the photos\n")

    lines = first.splitlines()
    assert lines[0] == (
        f"Switchboard console: workflow ecommerce, model: local-model via {server.base_url}."
    )
    assert lines[2:] == [
        "  ↪ Triage handed you to Returns: Return request.",
        "Returns: I can help with that. What is your order number?",
        "Returns: Thanks! Order 42 is eligible; a return label is on its way.",
        "  ↪ A specialist will look at this with you.",  # a review agent's reason is not shown
        "Fraud Review: A colleague will review this; please send photos of the parcel.",
        "[moderators] Case #1: Fraud review (open) opened: Refund without return. "
        "(/approve 1, /reject 1, /takeover 1, /close 1)",
        f"Bye. Resume this conversation with: python -m bot console --database {db} --thread shop",
    ]
    assert "Resuming thread shop: Fraud, open." in second
    assert (
        "Fraud Review: A colleague will review this; please send photos of the parcel."
        in (second.splitlines()[-2])
    )
    agents = [body["messages"][0]["content"].split(",")[0] for body in server.requests]
    assert agents == [
        "You are Triage",
        "You are Returns",
        "You are Returns",
        "You are Returns",
        "You are Fraud",
        "You are Fraud",
    ]
    assert {body["model"] for body in server.requests} == {"local-model"}


async def test_console_moderation_and_the_cases_command(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    async with ChatCompletionsServer(respond=canonical) as server:
        out = await run_console(
            server,
            db,
            "I want to return my order\nIt never arrived, just refund me\n/cases\n"
            "/approve 1\n/approve 1\n/takeover 1\nhello?\n/mod 1 A person is here now.\n"
            "/handback 1 Returns\n/close 1\n/help\n",
        )
    lines = out.splitlines()
    assert "  #1 open: shop (Refund without return.)" in lines
    assert "[moderators] Case #1: A moderator approved this request." in lines
    assert "  ! A moderator approved this request." in lines
    assert (
        "[moderators] Case #1 was already approved by console-moderator; nothing changed." in lines
    )
    assert "  [moderator → shop] A person is here now." in lines
    assert "[moderators] Case #1: The moderator handed the conversation back to Returns." in lines
    assert "[moderators] Case #1: A moderator closed this conversation." in lines
    after_takeover = lines[lines.index("  [moderator → shop] A person is here now.") - 1]
    assert after_takeover.startswith("[moderators] Case #1: A moderator has joined")
    assert lines[lines.index(after_takeover) - 1].startswith("  ! A moderator has joined")
    # ... and "hello?" between them got no answer.
    assert any(line.startswith("Moderators: /cases") for line in lines)

    listing = await bot("cases", "--database", str(db), env=clean_env())
    printed, _ = await listing.communicate()
    rows = printed.decode().splitlines()
    assert rows[0].split() == ["case", "status", "age", "moderator", "thread", "about"]
    assert rows[1].split()[:2] == ["1", "closed"]
    assert "console-moderator" in rows[1] and "Refund without return." in rows[1]
