"""A cache of each active thread's recent window, so a turn does not re-read and re-decode it.

An entry is trusted only while the stored `item_count` says nothing was appended behind its back
(another process, a restart, a crash): otherwise the window is read again from the store.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.engine.transcript import Item, estimate_tokens
from bot.store.values import Entry


@dataclass(frozen=True, slots=True)
class WindowBudget:
    """How much history a turn loads: at most `items` entries, about `tokens` tokens."""

    items: int = 200
    tokens: int = 6000
    cached_sessions: int = 1024


@dataclass(slots=True)
class _Window:
    last_seq: int
    first_user: Item | None
    first_user_seq: int
    items: deque[tuple[int, Item, int]] = field(default_factory=deque)


class WindowCache:
    """Recent items of the `capacity` most recently active sessions, `limit` items each."""

    def __init__(self, limit: int, capacity: int = 1024) -> None:
        self.limit = limit
        self.capacity = capacity
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
        if first_user is None:
            first_user = next((e for e in entries if e.item.kind == "user"), None)
        window = _Window(
            last_seq=entries[-1].seq if entries else 0,
            first_user=first_user.item if first_user else None,
            first_user_seq=first_user.seq if first_user else 0,
            items=deque(
                ((e.seq, e.item, estimate_tokens(e.item)) for e in entries), maxlen=self.limit
            ),
        )
        self._windows[session_id] = window
        self._windows.move_to_end(session_id)
        while len(self._windows) > self.capacity:
            self._windows.popitem(last=False)

    def extend(self, session_id: int, item_count: int, items: Sequence[Item]) -> None:
        """Add items just stored as the last `len(items)` of `item_count`; drop on any gap."""
        window = self._windows.get(session_id)
        if window is None:
            return
        first = item_count - len(items) + 1
        if window.last_seq != first - 1:
            del self._windows[session_id]
            return
        for offset, item in enumerate(items):
            window.items.append((first + offset, item, estimate_tokens(item)))
            if window.first_user is None and item.kind == "user":
                window.first_user, window.first_user_seq = item, first + offset
        window.last_seq = item_count

    def __len__(self) -> int:
        return len(self._windows)
