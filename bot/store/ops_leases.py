"""Thread leases: a thread's turn runs in one process at a time (for a shared database)."""

from __future__ import annotations

import time

from bot.store.sql import Op, count, row

LEASE_S = 120.0


def take_lease(name: str, owner: str) -> Op[bool]:
    """Take the thread's lease if it is free or expired; False while another owner holds it."""
    now = time.time()
    holder = yield row(
        "INSERT INTO thread_leases (thread_key, owner, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (thread_key) DO UPDATE SET owner = excluded.owner, "
        "expires_at = excluded.expires_at WHERE thread_leases.expires_at < ? "
        "RETURNING owner",
        name,
        owner,
        now + LEASE_S,
        now,
    )
    return holder is not None and holder[0] == owner


def drop_lease(name: str, owner: str) -> Op[None]:
    yield count("DELETE FROM thread_leases WHERE thread_key = ? AND owner = ?", name, owner)
