"""Thread leases on a shared database: one process runs a thread's turns, fenced by a token.

A lease is taken for a short time and renewed while the turn runs. Taking it raises its token, so
a process that lost it (paused, partitioned, presumed dead) is refused at its next write: every
write of a turn checks the fence first, in its own transaction. Rows are never deleted while in
use, so a token never goes back. Expiry is read on the database's clock, so the processes'
clocks need not agree.
"""

from __future__ import annotations

from bot.store.sql import Op, count, row
from bot.store.values import Fence, LeaseLost

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"  # the database's clock, in seconds


def acquire(name: str, owner: str, ttl: float) -> Op[Fence | None]:
    """Take the thread's lease if it is free, expired or already ours; None while another
    process holds it."""
    taken = yield row(
        "INSERT INTO thread_leases (thread_key, owner, token, expires_at) "
        f"VALUES (?, ?, 1, {_NOW} + ?) "
        "ON CONFLICT (thread_key) DO UPDATE SET owner = excluded.owner, "
        "token = thread_leases.token + 1, expires_at = excluded.expires_at "
        f"WHERE thread_leases.expires_at < {_NOW} OR thread_leases.owner = excluded.owner "
        "RETURNING owner, token",
        name,
        owner,
        ttl,
    )
    if taken is None or taken[0] != owner:
        return None
    return Fence(name, owner, int(taken[1]))


def renew(fence: Fence, ttl: float) -> Op[bool]:
    """Extend the lease; False if it was taken meanwhile."""
    renewed = yield count(
        f"UPDATE thread_leases SET expires_at = {_NOW} + ? "
        "WHERE thread_key = ? AND owner = ? AND token = ?",
        ttl,
        fence.key,
        fence.owner,
        fence.token,
    )
    return bool(renewed)


def release(fence: Fence) -> Op[None]:
    """Let the lease go (the row stays, so the next token is higher still)."""
    yield count(
        "UPDATE thread_leases SET expires_at = 0 WHERE thread_key = ? AND owner = ? AND token = ?",
        fence.key,
        fence.owner,
        fence.token,
    )


def check(fence: Fence | None) -> Op[None]:
    """Refuse the write (raise `LeaseLost`) unless the fence still holds the lease."""
    if fence is None:
        return
    held = yield row(
        "SELECT 1 FROM thread_leases WHERE thread_key = ? AND owner = ? AND token = ? FOR UPDATE",
        fence.key,
        fence.owner,
        fence.token,
    )
    if held is None:
        raise LeaseLost(f"the lease on {fence.key} was taken by another process")


def prune(before: float) -> Op[None]:
    """Forget leases unused since `before` (nobody can still hold a token that old)."""
    yield count("DELETE FROM thread_leases WHERE expires_at < ?", before)
