"""Store operations written once, as generators of SQL statements: no I/O of their own.

An operation yields each statement it needs and receives the statement's result: rows, one row,
or a count of changed rows. A driver per backend runs it (SQLite's on its connection thread in
one hop, asyncpg's on a pooled connection), inside one transaction for a write. The SQL is the
dialect both backends share; a driver translates the rest (`?` placeholders become `$1`...,
`FOR UPDATE` is left out where there is a single writer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Row = Sequence[Any]
Returns = Literal["rows", "row", "count"]
_VERSION = re.compile(r"^-- version (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement with its arguments, and what the operation wants back."""

    text: str
    args: tuple[Any, ...] = ()
    returns: Returns = "rows"


@dataclass(frozen=True, slots=True)
class Many:
    """One statement run once per row of arguments; returns nothing."""

    text: str
    rows: Sequence[tuple[Any, ...]]


Statement = Sql | Many
Op = Generator[Statement, Any, T]


def rows(text: str, *args: Any) -> Sql:
    """A query whose rows the operation receives (a list)."""
    return Sql(text, args, "rows")


def row(text: str, *args: Any) -> Sql:
    """A query whose first row the operation receives (or None)."""
    return Sql(text, args, "row")


def count(text: str, *args: Any) -> Sql:
    """A change whose number of affected rows the operation receives."""
    return Sql(text, args, "count")


def to_json(value: Any) -> str:
    """JSON text as the store keeps it (unescaped Unicode)."""
    return json.dumps(value, ensure_ascii=False)


def migrations(filename: str) -> list[tuple[int, str]]:
    """The `(version, script)` blocks of a schema file, in order."""
    text = resources.files("bot.store").joinpath(filename).read_text(encoding="utf-8")
    parts = _VERSION.split(text)
    return [(int(parts[i]), parts[i + 1]) for i in range(1, len(parts), 2)]
