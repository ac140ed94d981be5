"""Thread leases on a shared database: one process runs a thread's turns, fenced by a token.

A lease is taken for a short time and renewed while the turn runs. Taking it raises its token, so
a process that lost it (paused, partitioned, presumed dead) is refused at its next write: every
write of a turn checks the fence first, in its own transaction. Rows are never deleted while in
use, so a token never goes back. Expiry is read on the database's clock, so the processes'
clocks need not agree.

The process that stores a thread's message takes the thread's lease in the same write when it is
free (`take`): the turn that follows starts with no transaction of its own for the lease. What
this process holds, and owes the database for it, is kept in a `Ledger` (see `Store`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bot.store.sql import Op, count, row
from bot.store.values import Fence, LeaseLost, Outgoing

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


def take(name: str, owner: str, ttl: float) -> Op[Fence | None]:
    """Take the thread's lease only if it is free or expired, and never wait for it: a lease
    held (ours included: a worker of ours may be using it) or being taken right now is left
    alone (None). It rides on the write that stores a message, which must not wait. One
    statement: the expired row updated, or a new row inserted."""
    taken = yield row(
        "WITH free AS (SELECT thread_key FROM thread_leases WHERE thread_key = ? "
        f"AND expires_at < {_NOW} FOR UPDATE SKIP LOCKED), "
        "renewed AS (UPDATE thread_leases t SET owner = ?, token = t.token + 1, "
        f"expires_at = {_NOW} + ? FROM free WHERE t.thread_key = free.thread_key "
        "RETURNING t.owner, t.token), "
        "fresh AS (INSERT INTO thread_leases (thread_key, owner, token, expires_at) "
        f"SELECT ?, ?, 1, {_NOW} + ? WHERE NOT EXISTS (SELECT 1 FROM thread_leases "
        "WHERE thread_key = ?) ON CONFLICT DO NOTHING RETURNING owner, token) "
        "SELECT owner, token FROM renewed UNION ALL SELECT owner, token FROM fresh",
        name,
        owner,
        ttl,
        name,
        owner,
        ttl,
        name,
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


def holds(fence: Fence) -> Op[bool]:
    """Whether the fence still holds the lease (the row locked until the write commits)."""
    held = yield row(
        "SELECT 1 FROM thread_leases WHERE thread_key = ? AND owner = ? AND token = ? FOR UPDATE",
        fence.key,
        fence.owner,
        fence.token,
    )
    return held is not None


def check(fence: Fence | None) -> Op[None]:
    """Refuse the write (raise `LeaseLost`) unless the fence still holds the lease."""
    if fence is not None and not (yield from holds(fence)):
        raise LeaseLost(f"the lease on {fence.key} was taken by another process")


def prune(before: float) -> Op[None]:
    """Forget leases unused since `before` (nobody can still hold a token that old)."""
    yield count("DELETE FROM thread_leases WHERE expires_at < ?", before)


SentMark = tuple[Outgoing, str | None]  # a post marked sent, with the platform's reference


@dataclass(eq=False, slots=True)
class Lease:
    """A lease of this process as it stands between writes, with the sent marks it owes."""

    fence: Fence
    since: float  # when it was last taken or renewed (this process's monotonic clock)
    ttl: float
    marks: list[SentMark] = field(default_factory=list)
    listed: int | None = None  # the last post the thread's worker listed

    def lasts(self, ttl: float) -> bool:
        """Whether at least half of `ttl` is left of it (measured from before it was asked)."""
        return self.ttl - (time.monotonic() - self.since) >= ttl / 2


@dataclass(eq=False)
class Ledger:
    """This process's leases: taken with a message for the worker to come (`taken`), held by a
    worker (`held`), let go by a worker but not written yet (`done`). Pure bookkeeping: the
    `Store` writes what it says is owed."""

    ttl: float | None = None  # how long workers ask a lease to last
    taken: dict[str, Lease] = field(default_factory=dict)
    held: dict[str, Lease] = field(default_factory=dict)
    done: dict[str, Lease] = field(default_factory=dict)

    def reuse(self, name: str, ttl: float) -> Fence | None:
        """A lease a thread's new worker may use with no transaction while half of it is left:
        the one its last worker let go of (not written yet), or the one its message took."""
        self.ttl = ttl
        for pool in (self.done, self.taken):
            lease = pool.get(name)
            if lease is not None and lease.lasts(ttl):
                del pool[name]
                self.held[name] = lease
                return lease.fence
        self.taken.pop(name, None)
        return None

    def hold(self, fence: Fence, since: float, ttl: float, pool: str = "held") -> None:
        """A lease just taken (`held` by a worker, or `taken` with a message)."""
        found = self.held if pool == "held" else self.taken
        if pool == "taken":
            now = time.monotonic()
            self.taken = found = {n: e for n, e in found.items() if e.since + e.ttl > now}
        found[fence.key] = Lease(fence, since, ttl)

    def renewed(self, fence: Fence, since: float) -> None:
        lease = self.held.get(fence.key)
        if lease is not None and lease.fence == fence:
            lease.since = since

    def defer(self, post: Outgoing, ref: str | None, fence: Fence | None) -> bool:
        """Keep the mark for the thread's next write if the post is the last its worker
        listed: no post of the thread is sent before that write or the next listing."""
        lease = self.held.get(str(post.key))
        if fence is None or lease is None or lease.fence != fence or lease.listed != post.id:
            return False
        lease.marks.append((post, ref))
        return True

    def let_go(self, fence: Fence) -> None:
        lease = self.held.pop(fence.key, None)
        if lease is None or lease.fence != fence:
            lease = Lease(fence, 0.0, 0.0)
        self.done[fence.key] = lease

    def has(self, name: str) -> bool:
        """Whether this process holds the thread's lease (taken, held, or let go unwritten)."""
        return name in self.held or name in self.done or name in self.taken

    def owes(self, name: str) -> bool:
        """Whether marks of the thread are not written yet."""
        return any(
            pool.get(name) is not None and pool[name].marks for pool in (self.held, self.done)
        )

    def owing(self, turn: int | None = None, session_id: int | None = None) -> str | None:
        """A thread owing the mark of a post of this turn or session."""
        for pool in (self.held, self.done):
            for name, lease in pool.items():
                if any(
                    (turn is not None and p.turn == turn)
                    or (session_id is not None and p.session_id == session_id)
                    for p, _ in lease.marks
                ):
                    return name
        return None

    def riders(self, name: str | None, everything: bool) -> tuple[list[Lease], list[Lease]]:
        """What a write of thread `name` carries, taken out of the ledger: the thread's owed
        marks, and leases to let go (the thread's own; every one, for a write of a held
        thread, whose transaction locks only lease rows this process holds)."""
        marked: list[Lease] = []
        lease = self.held.get(name) if name is not None else None
        if lease is not None and lease.marks:
            marked.append(Lease(lease.fence, lease.since, lease.ttl, lease.marks))
            lease.marks = []
        if everything:
            going, self.done = list(self.done.values()), {}
        else:
            own = self.done.pop(name, None) if name is not None else None
            going = [own] if own is not None else []
        return marked, going

    def restore(self, marked: list[Lease], going: list[Lease]) -> None:
        """The write that carried them failed: they are owed still."""
        for rider in marked:
            lease = self.held.get(rider.fence.key)
            if lease is not None and lease.fence == rider.fence:
                lease.marks[:0] = rider.marks
        for lease in going:
            self.done.setdefault(lease.fence.key, lease)
