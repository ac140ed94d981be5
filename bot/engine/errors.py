"""Errors raised by the engine: one base, and the validation errors of the files it reads."""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Base of every error the engine raises."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow: where (a field path), what, and how to fix it."""

    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}. Fix: {self.fix}"


class FileError(EngineError):
    """A file failed validation; `problems` lists every fault found, not just the first."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], source: str | None = None):
        self.problems = tuple(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        lines = [f"{prefix}{problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class WorkflowError(FileError):
    """A workflow failed validation."""
