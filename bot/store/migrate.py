"""Copy every conversation from a SQLite file into PostgreSQL (`python -m bot migrate`)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bot.store.postgres import PostgresDriver
from bot.store.values import StoreError

# Tables in dependency order, with the columns both schemas share.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "sessions",
        (
            "id",
            "platform",
            "channel",
            "thread",
            "workflow",
            "active_agent",
            "status",
            "item_count",
            "created_at",
            "updated_at",
            "model_calls",
            "prompt_tokens",
            "completion_tokens",
            "taken_over_by",
        ),
    ),
    ("items", ("session_id", "seq", "kind", "agent", "body", "created_at")),
    ("inbound_events", ("platform", "event_id", "session_id", "received_at")),
    (
        "cases",
        (
            "id",
            "session_id",
            "agent",
            "reason",
            "status",
            "moderator",
            "card",
            "opened_at",
            "updated_at",
            "kind",
            "call",
            "result",
        ),
    ),
    ("case_actions", ("case_id", "seq", "action", "actor", "at")),
    (
        "inbox",
        (
            "id",
            "platform",
            "channel",
            "thread",
            "event_id",
            "author",
            "text",
            "mentioned",
            "stamp",
            "cut",
            "received_at",
            "session_id",
            "seq",
            "done_at",
            "case_id",
        ),
    ),
    (
        "model_calls",
        ("session_id", "seq", "agent", "model", "prompt_tokens", "completion_tokens", "created_at"),
    ),
    (
        "outbox",
        (
            "id",
            "platform",
            "channel",
            "thread",
            "session_id",
            "turn",
            "kind",
            "body",
            "origin",
            "attempts",
            "next_attempt_at",
            "error",
            "ref",
            "created_at",
            "sent_at",
            "degraded",
            "dead_at",
        ),
    ),
)
SEQUENCES = ("sessions", "inbox", "cases", "outbox")


async def migrate(source: str | Path, target: str) -> dict[str, int]:
    """Copy all rows; the target must hold no conversations yet. Returns rows copied per table."""
    if not await asyncio.to_thread(Path(source).is_file):
        raise StoreError(f"no SQLite database at {source}")

    from bot.store import sqlite_store

    async with sqlite_store(source):  # bring the file to the newest schema first
        pass
    rows = await asyncio.to_thread(_read, str(source))
    copied: dict[str, int] = {}
    store = PostgresDriver(target)
    await store.open()
    try:
        async with store.transaction() as conn:
            if await conn.fetchval("SELECT count(*) FROM sessions"):
                raise StoreError(
                    f"{store.where} already holds conversations; migrate into an empty database"
                )
            for table, columns in TABLES:
                values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
                await conn.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", rows[table]
                )
                copied[table] = len(rows[table])
            for table in SEQUENCES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
    finally:
        await store.close()
    return copied


def _read(source: str) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            for table, columns in TABLES
        }
