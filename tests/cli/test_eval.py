"""`python -m bot eval`: real processes, on the offline demo model and on a local Chat Completions
server that answers like a small local model (tool calls written as text)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot.engine.loader import load_workflow
from bot.evals import load_cases
from tests.fakes.chat_completions import ChatCompletionsServer, Reply, Step
from tests.processes import bot, clean_env

ROOT = Path(__file__).parents[2]


async def evaluate(*args: str, **env: str) -> tuple[int, str, str]:
    process = await bot("eval", *args, env=clean_env(**env))
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("name", ["ecommerce", "helpdesk", "content"])
def test_every_shipped_workflow_has_a_cases_file(name: str) -> None:
    cases = load_cases(
        ROOT / "evals" / f"{name}.yaml", load_workflow(ROOT / "workflows" / f"{name}.yaml")
    )
    messages = sum(len(case.messages) for case in cases)
    assert messages >= (40 if name == "ecommerce" else 3)


async def test_the_offline_model_is_evaluated_the_same_every_time() -> None:
    args = ("workflows/ecommerce.yaml", "evals/ecommerce.yaml", "--json", "--concurrency", "4")
    code, out, err = await evaluate(*args)
    assert code == 0, err
    first = json.loads(out)
    _, again, _ = await evaluate(*args)
    second = json.loads(again)
    for report in (first, second):
        report.pop("seconds")
        for case in report["cases"]:
            case.pop("seconds")
    assert first == second  # deterministic, concurrency or not
    assert first["model"] == "offline demo" and first["messages"] == 45
    assert first["correct"] == sum(row["correct"] for row in first["per_agent"].values())
    assert first["accuracy"] == round(first["correct"] / 45, 4)
    assert sum(sum(row.values()) for row in first["confusion"].values()) == 45
    assert first["per_agent"]["Triage"]["messages"] == 6
    assert first["leaked"] == 0
    assert first["accuracy"] >= 0.9  # the demo routes as a person would
    assert first["model_calls"] > 45 and first["tokens"] == 0  # the demo counts no tokens


async def test_the_text_report_and_the_accuracy_gate() -> None:
    code, out, err = await evaluate(
        "workflows/ecommerce.yaml", "evals/ecommerce.yaml", "--min-accuracy", "0.99"
    )
    assert code == 1
    assert "below --min-accuracy 99.0%" in err
    lines = out.splitlines()
    assert lines[0].startswith("ecommerce on offline demo: ")
    assert "expected \\ answered" in out and "Failing cases (" in out
    assert any(line.startswith("## ") for line in lines)  # a failing case, with its transcript
    assert "**user**: " in out
    code, _, _ = await evaluate(
        "workflows/ecommerce.yaml", "evals/ecommerce.yaml", "--min-accuracy", "0.1"
    )
    assert code == 0


def small_model(body: dict[str, Any]) -> Step:
    """Answers as a small local model on a raw server: a handoff written as JSON text."""
    system = body["messages"][0]["content"]
    if system.startswith("You are Triage"):
        said = body["messages"][-1]["content"].lower()
        target = "Orders" if "parcel" in said else "Returns"
        return Reply(json.dumps({"name": f"handoff_to_{target.lower()}", "arguments": {}}))
    return Reply(f"[{system.split(',')[0][8:]}] How can I help?")


async def test_a_model_that_writes_its_calls_as_text_routes_and_nothing_leaks(
    tmp_path: Path,
) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - name: refund\n"
        "    messages:\n"
        "      - {user: I want a refund, expect: Returns, tools: [handoff_to_Returns]}\n"
        "  - name: parcel\n"
        "    messages:\n"
        '      - {user: "Where is my parcel?", expect: Orders}\n'
        "      - {user: thanks, expect: Triage}\n"
    )
    async with ChatCompletionsServer(respond=small_model) as server:
        code, out, err = await evaluate(
            "workflows/ecommerce.yaml", str(cases), OPENAI_BASE_URL=server.base_url
        )
    assert code == 0, err
    assert out.splitlines()[0].startswith("ecommerce on gpt-4.1-mini via http://127.0.0.1:")
    assert "2 of 3 messages answered by the expected agent (66.7%); 0 replies leaked" in out
    assert "message 2: expected Triage, answered Orders" in out
    assert "**Orders**: How can I help?" in out  # posted without its label
    assert "- _Triage called `handoff_to_Orders` with `{}`_" in out  # the text became the call
    assert "**Triage**:" not in out and "handoff_to_orders" not in out


async def test_a_bad_cases_file_names_the_file_field_and_fix(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    messages:\n      - {user: hi, expect: Retuns, tools: [nope]}\n"
        "  - name: x\n    messages: []\n"
    )
    code, out, err = await evaluate("workflows/ecommerce.yaml", str(cases))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"error: {cases}: cases[1].messages: list should have at least 1 item after validation, "
        "not 0. Fix: add at least one entry",
    ]
    cases.write_text(
        "cases:\n  - name: x\n    messages:\n      - {user: hi, expect: Retuns, tools: [nope]}\n"
    )
    code, _, err = await evaluate("workflows/ecommerce.yaml", str(cases))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == (
        f"error: {cases}: cases[0].messages[0].expect: 'Retuns' is not an agent of ecommerce. "
        "Fix: use one of: Triage, Returns, Orders, Fraud"
    )
    assert lines[1].startswith(f"{cases}: cases[0].messages[0].tools[0]: 'nope' is not a tool")
