"""Durable conversations: the `SessionStore` protocol and its SQLite implementation."""

from bot.store.base import (
    Entry,
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
    "Received",
    "SQLiteStore",
    "Session",
    "SessionKey",
    "SessionStore",
    "Status",
    "StoreError",
]
