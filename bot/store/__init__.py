"""Durable conversations: the `SessionStore` protocol and its SQLite implementation."""

from bot.store.base import (
    Entry,
    ModelCallRecord,
    ModelUsage,
    Received,
    Session,
    SessionKey,
    SessionStore,
    Status,
    StoreError,
)
from bot.store.sqlite import SQLiteStore

__all__ = [
    "Entry",
    "ModelCallRecord",
    "ModelUsage",
    "Received",
    "SQLiteStore",
    "Session",
    "SessionKey",
    "SessionStore",
    "Status",
    "StoreError",
]
