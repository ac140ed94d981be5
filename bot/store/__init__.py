"""Durable conversations: the `SessionStore` protocol and its SQLite implementation."""

from bot.store.base import (
    Case,
    CaseAction,
    CaseStatus,
    Entry,
    ModelCallRecord,
    ModelUsage,
    Outgoing,
    Received,
    Session,
    SessionKey,
    SessionStore,
    Status,
    StoreError,
)
from bot.store.sqlite import SQLiteStore


def store_for(database: str) -> SessionStore:
    """`PostgresStore` for a `postgresql://` URL (several processes), else a SQLite file."""
    if database.startswith(("postgresql://", "postgres://")):
        from bot.store.postgres import PostgresStore  # imports asyncpg only when chosen

        return PostgresStore(database)
    return SQLiteStore(database)


__all__ = [
    "Case",
    "CaseAction",
    "CaseStatus",
    "Entry",
    "ModelCallRecord",
    "ModelUsage",
    "Outgoing",
    "Received",
    "SQLiteStore",
    "Session",
    "SessionKey",
    "SessionStore",
    "Status",
    "StoreError",
    "store_for",
]
