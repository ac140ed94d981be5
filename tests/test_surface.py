"""The public surface is small and deliberate, and imports flow one way."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bot.engine
import bot.models
import bot.service
import bot.store


@pytest.mark.parametrize(
    ("package", "size"),
    [(bot.engine, 35), (bot.models, 11), (bot.store, 17), (bot.service, 14)],
)
def test_exports_are_listed_and_exist(package: object, size: int) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    assert len(names) == size, sorted(names)
    assert sorted(names) == sorted(set(names))
    for name in names:
        assert getattr(package, name) is not None


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "bot.engine",
            [
                "openai",
                "aiosqlite",
                "sqlite3",
                "slack_bolt",
                "discord",
                "asyncpg",
                "bot.store",
                "bot.service",
                "bot.adapters",
            ],
        ),
        ("bot.models", ["openai", "aiosqlite", "sqlite3", "bot.store", "bot.service"]),
        ("bot.store", ["openai", "bot.service", "bot.adapters"]),
        ("bot.service", ["openai", "bot.adapters", "bot.testing", "slack_bolt", "discord"]),
    ],
)
def test_imports_flow_one_way(module: str, forbidden: list[str]) -> None:
    code = (
        f"import sys, {module}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r} "
        f"or any(m == f or m.startswith(f + '.') for f in {forbidden!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
