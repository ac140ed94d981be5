"""`switchboard eval`: does the workflow still route, on the configured model?

A cases file lists short conversations; each user message names the agent that should answer it
(`expect`) and, optionally, tools that should be called during its turn (`tools`). Every case
runs as a thread of its own through the conversation service (the real engine, rules and store,
on a temporary SQLite file; no platform), and the report counts which agent answered each message:
accuracy overall and per expected agent, a confusion table, replies that leaked what customers
should not see (a label, tool-call JSON, a tool name, a note), the failing cases with their
transcripts, and model calls, tokens and seconds per case.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from bot.engine.errors import FileError, Problem
from bot.engine.loader import Strict, read_spec
from bot.engine.tolerance import leaks
from bot.engine.transcript import AgentReply, ToolOutcome
from bot.engine.workflow import Workflow
from bot.models.base import ChatModel
from bot.runtime import open_service
from bot.service import ConversationService, IncomingMessage
from bot.service.export import item_lines
from bot.settings import Settings

NOBODY = "(nobody)"  # the turn ended without any agent's reply


class CasesError(FileError):
    """A cases file failed validation."""


class MessageSpec(Strict):
    """One user message and who should answer it."""

    user: str = Field(min_length=1)
    expect: str = Field(min_length=1)
    tools: list[str] = Field(default_factory=list)


class CaseSpec(Strict):
    """One conversation: its name and its messages, in order."""

    name: str = Field(min_length=1)
    messages: list[MessageSpec] = Field(min_length=1)


class CasesSpec(Strict):
    """The whole cases file."""

    cases: list[CaseSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Answer:
    """How one message was answered."""

    user: str
    expected: str
    answered: str
    missing_tools: tuple[str, ...]

    @property
    def correct(self) -> bool:
        return self.answered == self.expected and not self.missing_tools


@dataclass(slots=True)
class CaseRun:
    """One case, run: its answers, what it cost, and its transcript."""

    name: str
    answers: list[Answer] = field(default_factory=list)
    model_calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    leaked: int = 0  # replies posted with a label, tool JSON, a tool name or a note in them
    transcript: list[str] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(answer.correct for answer in self.answers)


def load_cases(path: Path, workflow: Workflow) -> list[CaseSpec]:
    """Read and check a cases file against the workflow; `CasesError` lists every problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = Problem("file", f"cannot be read ({exc.strerror})", "check the path")
        raise CasesError([problem], source) from exc
    spec = read_spec(text, source, CasesSpec, CasesError, "cases", "`cases:`")
    agents = ", ".join(workflow.agents)
    tools = {tool.name for agent in workflow.agents for tool in workflow.handoffs(agent)}
    tools |= {tool.name for agent in workflow.agents.values() for tool in agent.function_tools}
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, case in enumerate(spec.cases):
        if case.name in seen:
            problems.append(
                Problem(f"cases[{index}].name", f"{case.name!r} is used twice", "rename one")
            )
        seen.add(case.name)
        for number, message in enumerate(case.messages):
            where = f"cases[{index}].messages[{number}]"
            if message.expect not in workflow.agents:
                problems.append(
                    Problem(
                        f"{where}.expect",
                        f"{message.expect!r} is not an agent of {workflow.name}",
                        f"use one of: {agents}",
                    )
                )
            for position, tool in enumerate(message.tools):
                if tool not in tools:
                    problems.append(
                        Problem(
                            f"{where}.tools[{position}]",
                            f"{tool!r} is not a tool of {workflow.name}",
                            f"use one of: {', '.join(sorted(tools)) or 'none (it has no tools)'}",
                        )
                    )
    if problems:
        raise CasesError(problems, source)
    return list(spec.cases)


async def run_cases(
    settings: Settings,
    workflow_path: Path,
    cases: Sequence[CaseSpec],
    *,
    concurrency: int = 1,
    model: ChatModel | None = None,
    progress: Callable[[int], None] = lambda done: None,
) -> list[CaseRun]:
    """Run every case through the service on a temporary database; `progress(messages done)`."""
    done = 0

    def answered() -> None:
        nonlocal done
        done += 1
        progress(done)

    with tempfile.TemporaryDirectory(prefix="switchboard-eval-") as folder:
        database = str(Path(folder) / "eval.db")
        async with open_service(
            settings, workflow=workflow_path, database=database, model=model
        ) as service:
            gate = asyncio.Semaphore(max(1, concurrency))

            async def one(index: int, case: CaseSpec) -> CaseRun:
                async with gate:
                    return await _run_case(service, index, case, answered)

            runs = await asyncio.gather(*(one(i, case) for i, case in enumerate(cases)))
            await service.stop(5.0)
    return list(runs)


async def _run_case(
    service: ConversationService, index: int, case: CaseSpec, answered: Callable[[], None]
) -> CaseRun:
    run = CaseRun(case.name)
    thread = f"case-{index + 1}"
    started = time.perf_counter()
    seen = 0
    session = None
    for message in case.messages:
        result = await service.handle(IncomingMessage("eval", "cases", thread, message.user))
        session = result.session or session
        entries = await service.store.entries(session.id) if session else []
        new = [entry.item for entry in entries[seen:]]
        seen = len(entries)
        replies = [i for i in new if isinstance(i, AgentReply) and i.text]
        speakers = [reply.agent for reply in replies]
        run.leaked += sum(leaks(reply.text or "") for reply in replies)
        called = {i.name for i in new if isinstance(i, ToolOutcome)}
        missing = tuple(tool for tool in message.tools if tool not in called)
        run.answers.append(
            Answer(message.user, message.expect, speakers[-1] if speakers else NOBODY, missing)
        )
        for item in new:
            run.transcript.extend(item_lines(item))
        answered()
    run.seconds = time.perf_counter() - started
    if session is not None:
        stored = await service.store.get_session(session.id)
        if stored is not None:
            run.model_calls = stored.model_calls
            run.tokens = stored.prompt_tokens + stored.completion_tokens
    return run


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of an evaluation."""

    workflow: str
    model: str
    runs: Sequence[CaseRun]

    @property
    def answers(self) -> list[Answer]:
        return [answer for run in self.runs for answer in run.answers]

    @property
    def accuracy(self) -> float:
        answers = self.answers
        return sum(a.correct for a in answers) / len(answers) if answers else 0.0

    def per_agent(self) -> dict[str, dict[str, float]]:
        totals: Counter[str] = Counter(a.expected for a in self.answers)
        right: Counter[str] = Counter(a.expected for a in self.answers if a.correct)
        return {
            agent: {
                "messages": totals[agent],
                "correct": right[agent],
                "accuracy": round(right[agent] / totals[agent], 4),
            }
            for agent in sorted(totals)
        }

    def confusion(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {}
        for answer in self.answers:
            table.setdefault(answer.expected, Counter())[answer.answered] += 1
        return {expected: dict(sorted(row.items())) for expected, row in sorted(table.items())}

    def to_json(self) -> str:
        answers = self.answers
        document: dict[str, Any] = {
            "workflow": self.workflow,
            "model": self.model,
            "accuracy": round(self.accuracy, 4),
            "messages": len(answers),
            "correct": sum(a.correct for a in answers),
            "per_agent": self.per_agent(),
            "confusion": self.confusion(),
            "leaked": sum(run.leaked for run in self.runs),
            "model_calls": sum(run.model_calls for run in self.runs),
            "tokens": sum(run.tokens for run in self.runs),
            "seconds": round(sum(run.seconds for run in self.runs), 3),
            "cases": [
                {
                    "name": run.name,
                    "messages": len(run.answers),
                    "correct": run.correct,
                    "leaked": run.leaked,
                    "model_calls": run.model_calls,
                    "tokens": run.tokens,
                    "seconds": round(run.seconds, 3),
                    "failures": [
                        {
                            "message": number,
                            "user": answer.user,
                            "expected": answer.expected,
                            "answered": answer.answered,
                            "missing_tools": list(answer.missing_tools),
                        }
                        for number, answer in enumerate(run.answers, 1)
                        if not answer.correct
                    ],
                }
                for run in self.runs
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        answers = self.answers
        right = sum(a.correct for a in answers)
        lines = [
            f"{self.workflow} on {self.model}: {right} of {len(answers)} messages answered by "
            f"the expected agent ({self.accuracy:.1%}); "
            f"{sum(run.leaked for run in self.runs)} replies leaked a label, tool call or note",
            "",
            f"{'expected agent':<20} {'messages':>8} {'correct':>8} {'accuracy':>9}",
        ]
        for agent, row in self.per_agent().items():
            lines.append(
                f"{agent:<20} {row['messages']:>8} {row['correct']:>8} {row['accuracy']:>9.1%}"
            )
        lines += ["", *_confusion_lines(self.confusion()), ""]
        failing = [run for run in self.runs if run.correct < len(run.answers)]
        if failing:
            lines.append(f"Failing cases ({len(failing)}):")
            for run in failing:
                lines += ["", f"## {run.name}"]
                for number, answer in enumerate(run.answers, 1):
                    if not answer.correct:
                        missing = (
                            f", tools not called: {', '.join(answer.missing_tools)}"
                            if answer.missing_tools
                            else ""
                        )
                        lines.append(
                            f"  message {number}: expected {answer.expected}, answered "
                            f"{answer.answered}{missing}"
                        )
                lines += [f"    {line}" for line in run.transcript]
            lines.append("")
        lines.append(f"{'case':<44} {'correct':>9} {'calls':>6} {'tokens':>8} {'seconds':>8}")
        for run in self.runs:
            score = f"{run.correct}/{len(run.answers)}"
            lines.append(
                f"{run.name[:44]:<44} {score:>9} {run.model_calls:>6} {run.tokens:>8} "
                f"{run.seconds:>8.2f}"
            )
        return "\n".join(lines)


def _confusion_lines(confusion: dict[str, dict[str, int]]) -> list[str]:
    """Expected agents down, answering agents across."""
    columns = sorted({answered for row in confusion.values() for answered in row})
    width = max([len(c) for c in columns] + [5])
    corner = "expected \\ answered"
    head = f"{corner:<20} " + " ".join(f"{c:>{width}}" for c in columns)
    rows = [
        f"{expected:<20} " + " ".join(f"{row.get(c, 0):>{width}}" for c in columns)
        for expected, row in confusion.items()
    ]
    return [head, *rows]


def progress_bar(total: int, write: Callable[[str], object]) -> Callable[[int], None]:
    """A one-line bar, redrawn in place as messages are answered."""
    started = time.monotonic()

    def show(done: int) -> None:
        filled = math.floor(30 * done / total) if total else 30
        elapsed = time.monotonic() - started
        end = "\n" if done >= total else ""
        write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} messages {elapsed:.0f}s{end}"
        )

    return show
