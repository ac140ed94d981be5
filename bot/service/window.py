"""A cache of each active thread's recent window, so a turn does not re-read and re-decode it.

An entry is trusted only while the stored `item_count` says nothing was appended behind its back
(another process, a restart, a crash): otherwise the window is read again from the store. The
cache is bounded in bytes (an estimate from each item's text), least recently used first out, so
its memory stays flat however many threads are active or however long their messages are.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.engine.transcript import Item, estimate_tokens
from bot.store.values import Entry

CACHE_BYTES = 64 * 2**20
ITEM_OVERHEAD = 400  # bytes of an item's objects besides its text (measured: ~0.4 KB)


@dataclass(frozen=True, slots=True)
class WindowBudget:
    """How much history a turn loads: at most `items` entries, about `tokens` tokens; and how
    much memory the windows of recently active threads may keep (`cache_bytes`, and at most
    `cached_sessions` of them)."""

    items: int = 200
    tokens: int = 6000
    cached_sessions: int = 100_000
    cache_bytes: int = CACHE_BYTES


@dataclass(slots=True)
class _Window:
    last_seq: int
    first_user: Item | None
    first_user_seq: int
    items: deque[tuple[int, Item, int]] = field(default_factory=deque)
    size: int = 0  # estimated bytes


def item_bytes(cost: int) -> int:
    """An item's estimated memory from its token estimate (about four characters a token)."""
    return 4 * cost + ITEM_OVERHEAD


class WindowCache:
    """Recent items (`limit` each) of the most recently active sessions, at most `capacity`
    sessions and about `max_bytes` in all; the session in use is never evicted for its size."""

    def __init__(self, limit: int, capacity: int = 100_000, max_bytes: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._windows: OrderedDict[int, _Window] = OrderedDict()

    def get(self, session_id: int, item_count: int) -> _Window | None:
        """The cached window if it holds everything up to `item_count`, else None."""
        window = self._windows.get(session_id)
        if window is None or window.last_seq != item_count:
            return None
        self._windows.move_to_end(session_id)
        return window

    def load(self, session_id: int, entries: Sequence[Entry], first_user: Entry | None) -> None:
        """Replace the session's window with entries read from the store."""
        self._drop(session_id)
        if first_user is None:
            first_user = next((e for e in entries if e.item.kind == "user"), None)
        window = _Window(
            last_seq=entries[-1].seq if entries else 0,
            first_user=first_user.item if first_user else None,
            first_user_seq=first_user.seq if first_user else 0,
        )
        kept = entries[-self.limit :]
        if first_user is not None and (not kept or first_user.seq < kept[0].seq):
            window.size = item_bytes(estimate_tokens(first_user.item))  # kept beside the window
            self.bytes += window.size
        self._windows[session_id] = window
        self._append(window, [(e.seq, e.item) for e in kept])
        self._evict()

    def extend(self, session_id: int, item_count: int, items: Sequence[Item]) -> None:
        """Add items just stored as the last `len(items)` of `item_count`; drop on any gap."""
        window = self._windows.get(session_id)
        if window is None:
            return
        first = item_count - len(items) + 1
        if window.last_seq != first - 1:
            self._drop(session_id)
            return
        self._windows.move_to_end(session_id)
        for offset, item in enumerate(items):
            if window.first_user is None and item.kind == "user":
                window.first_user, window.first_user_seq = item, first + offset
        self._append(window, [(first + offset, item) for offset, item in enumerate(items)])
        window.last_seq = item_count
        self._evict()

    def __len__(self) -> int:
        return len(self._windows)

    def _append(self, window: _Window, items: list[tuple[int, Item]]) -> None:
        added = 0
        for seq, item in items:
            if len(window.items) == self.limit:
                dropped, _, cost = window.items.popleft()
                if dropped != window.first_user_seq:  # the first message stays, beside it
                    added -= item_bytes(cost)
            cost = estimate_tokens(item)
            window.items.append((seq, item, cost))
            added += item_bytes(cost)
        window.size += added
        self.bytes += added

    def _drop(self, session_id: int) -> None:
        window = self._windows.pop(session_id, None)
        if window is not None:
            self.bytes -= window.size

    def _evict(self) -> None:
        """Least recently used first, until within both bounds (never the newest)."""
        while len(self._windows) > 1 and (
            len(self._windows) > self.capacity or self.bytes > self.max_bytes
        ):
            _, window = self._windows.popitem(last=False)
            self.bytes -= window.size
