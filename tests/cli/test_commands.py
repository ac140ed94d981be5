"""check, graph, sessions and export, run in-process through `bot.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.engine.transcript import AgentReply, UserTurn
from bot.store import SessionKey, sqlite_store
from bot.store.values import ModelUsage
from tests.helpers import append, open_session

WORKFLOWS = Path(__file__).parents[2] / "workflows"


def test_check_passes_the_shipped_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *map(str, sorted(WORKFLOWS.glob("*.yaml")))]) == 0
    out = capsys.readouterr().out
    assert f"{WORKFLOWS / 'ecommerce.yaml'}: ok (4 agents, 7 handoffs, start Triage)" in out


def test_check_fails_with_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "start: A\nagents:\n  - name: A\n    instructions: x\n"
        "handoffs:\n  - from: A\n    to: [A, B]\n"
    )
    assert main(["check", str(bad), str(WORKFLOWS / "helpdesk.yaml")]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"{bad}: handoffs[0].to[0]: 'A' hands off to itself. Fix: remove the self-edge",
        f"{bad}: handoffs[0].to[1]: unknown agent 'B'. Fix: use one of: A",
    ]
    assert "helpdesk.yaml: ok" in captured.out


def test_check_warns_about_unreachable_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "start: A\nagents:\n  - {name: A, instructions: x}\n  - {name: B, instructions: y}\n"
        "handoffs:\n  - {from: B, to: [A]}\n"
    )
    assert main(["check", str(path)]) == 0
    assert "warning: agent 'B' cannot be reached" in capsys.readouterr().err


def test_graph_is_mermaid_with_reasons_and_marks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(WORKFLOWS / "ecommerce.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "flowchart LR"
    assert '    a0_Triage(["Triage (start)"])' in out
    assert '    a3_Fraud["Fraud (terminal, review: moderators)"]' in out
    assert '    a1_Returns -->|"Suspected return fraud or abuse."| a3_Fraud' in out
    assert "    class a3_Fraud review" in out


async def _seed(db: Path) -> int:
    async with sqlite_store(db) as store:
        session = await open_session(store, SessionKey("slack", "C1", "171.5"), "shop", "Returns")
        await append(store, session.id, [UserTurn("refund?", "ana")])
        await append(
            store,
            session.id,
            [AgentReply("Returns", "Sure.")],
            usage=ModelUsage("Returns", "m-1", 120, 10),
        )
        return session.id


async def test_sessions_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    session_id = await _seed(db)
    assert await _main_async(["sessions", "--database", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "id",
        "platform",
        "thread",
        "agent",
        "status",
        "items",
        "calls",
        "tokens",
        "updated",
    ]
    assert out[1].split()[:8] == [
        str(session_id),
        "slack",
        "171.5",
        "Returns",
        "open",
        "2",
        "1",
        "130",
    ]

    assert await _main_async(["export", str(session_id), "--database", str(db)]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith(f"# Conversation {session_id}: slack:C1:171.5")
    assert "**ana** (" in markdown and "): refund?" in markdown
    assert "Model usage: 1 calls, 120 prompt + 10 completion tokens." in markdown
    assert "- _model m-1: 120 prompt + 10 completion tokens_" in markdown

    assert await _main_async(["export", "171.5", "--format", "json", "--database", str(db)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["session"]["active_agent"] == "Returns"
    assert (document["session"]["prompt_tokens"], document["session"]["completion_tokens"]) == (
        120,
        10,
    )
    assert document["model_calls"][0]["model"] == "m-1"
    assert [(t["kind"], t.get("text")) for t in document["transcript"]] == [
        ("user", "refund?"),
        ("agent", "Sure."),
    ]

    assert await _main_async(["export", "nope", "--database", str(db)]) == 1
    assert "no conversation 'nope'" in capsys.readouterr().err


async def _main_async(argv: list[str]) -> int:
    """`main` runs its own event loop, so call it from a worker thread inside async tests."""
    import asyncio

    return await asyncio.to_thread(main, argv)
