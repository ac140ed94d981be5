"""check, graph, sessions and export, run in-process through `bot.cli.main`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.cli import main
from bot.engine.transcript import AgentReply, UserTurn
from bot.store import SessionKey, sqlite_store
from bot.store.sql import migrations
from bot.store.values import ModelUsage
from tests.helpers import append, open_session
from tests.processes import bot, clean_env

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
    assert "    a0_Triage --> a1_Returns" in out  # no reason given: no label
    labelled = [line for line in out if "-->|" in line]
    assert len(labelled) == 1 and labelled[0].startswith(
        '    a1_Returns -->|"Suspected return fraud or abuse'
    )
    assert labelled[0].endswith('"| a3_Fraud')
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


async def test_export_of_an_ambiguous_thread_name_lists_the_candidates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    first = await _seed(db)
    async with sqlite_store(db) as store:
        other = await open_session(store, SessionKey("discord", "C9", "171.5"), "shop", "Triage")
    assert await _main_async(["export", "171.5", "--database", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 2 conversations have the thread name '171.5': ")
    assert f"{first} (slack:C1:171.5, Returns, open, " in err
    assert f"{other.id} (discord:C9:171.5, Triage, open, " in err
    assert err.endswith("give the session id of the one you want\n")
    assert await _main_async(["export", str(other.id), "--database", str(db)]) == 0


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


async def run(*args: str, **env: str) -> tuple[int, str, str]:
    """`python -m bot ARGS` as a real process: exit code, stdout, stderr."""
    process = await bot(*args, env=clean_env(**env))
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_lists_every_problem_of_a_file_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "start: Triage\n"
        "agents:\n"
        "  - {name: Triage, instructions: Route., colour: red}\n"  # an unknown field
        "  - {name: Returns, instructions: Refund., tools: [nowhere.lookup]}\n"  # a bad tool
        "handoffs:\n"
        "  - {from: Triage, to: [Returns, Refunds]}\n"  # an unknown agent
        "max_handoffs_per_turn: lots\n"  # not a number
    )
    code, out, err = await run("check", str(broken))
    assert (code, out) == (1, "")
    assert [line.split(": ", 2)[1] for line in err.splitlines()] == [
        "agents[0].colour",
        "agents[1].tools[0]",
        "handoffs[0].to[1]",
        "max_handoffs_per_turn",
    ]
    assert all(line.startswith(f"{broken}: ") for line in err.splitlines())


async def test_graph_labels_only_edges_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "start: A\n"
        "agents:\n"
        "  - {name: A, instructions: x, description: A long description of what A does.}\n"
        "  - {name: B, instructions: y, description: A long description of what B does.}\n"
        "handoffs:\n"
        "  - {from: A, to: [B]}\n"
        "  - {from: B, to: [A], reason: Back to A.}\n"
    )
    code, out, err = await run("graph", str(path))
    assert (code, err) == (0, "")
    assert [line.strip() for line in out.splitlines() if "-->" in line] == [
        "a0_A --> a1_B",
        'a1_B -->|"Back to A."| a0_A',
    ]


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir())


READ_ONLY = [("sessions",), ("cases",), ("dead-letters",), ("export", "1")]


@pytest.mark.parametrize("command", READ_ONLY)
async def test_read_only_commands_create_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    db = tmp_path / "data" / "bot.db"
    code, out, err = await run(*command, BOT_DATABASE=str(db))
    assert (code, out) == (1, "")
    assert err == f"error: no database at {db} yet; it is created on first run\n"
    assert _files(tmp_path) == []


@pytest.mark.parametrize("command", READ_ONLY)
async def test_read_only_commands_leave_an_older_schema_as_it_is(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as old:
        for version, script in migrations("schema.sql")[:3]:
            old.executescript(f"{script};PRAGMA user_version = {version};")
    newest = migrations("schema.sql")[-1][0]
    code, _, err = await run(*command, "--database", str(db))
    assert code == 1
    assert err == (
        f"error: {db}: schema 3 of {newest} (not migrated yet: the bot migrates at start-up)\n"
    )
    with sqlite3.connect(db) as after:
        assert after.execute("PRAGMA user_version").fetchone()[0] == 3
