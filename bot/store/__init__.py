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
]
