"""The window cache: trusted only while the stored item count matches what it holds."""

from __future__ import annotations

from bot.engine import UserTurn
from bot.engine.transcript import estimate_tokens
from bot.service.window import WindowCache, item_bytes
from bot.store.values import Entry


def entries(*texts: str, start: int = 1) -> list[Entry]:
    return [Entry(start + i, 0.0, UserTurn(text)) for i, text in enumerate(texts)]


def test_hit_only_at_the_stored_item_count() -> None:
    cache = WindowCache(limit=3)
    cache.load(7, entries("a", "b"), None)
    assert cache.get(7, 2) is not None
    assert cache.get(7, 3) is None  # someone else appended: read again
    assert cache.get(8, 2) is None


def test_extend_keeps_the_newest_items_and_the_first_message() -> None:
    cache = WindowCache(limit=3)
    cache.load(1, entries("a", "b"), None)
    cache.extend(1, 4, [UserTurn("c"), UserTurn("d")])
    window = cache.get(1, 4)
    assert window is not None
    assert [(seq, item.text) for seq, item, _ in window.items] == [(2, "b"), (3, "c"), (4, "d")]  # type: ignore[union-attr]
    assert (window.first_user_seq, window.first_user) == (1, UserTurn("a"))


def test_a_gap_drops_the_window() -> None:
    cache = WindowCache(limit=5)
    cache.load(1, entries("a"), None)
    cache.extend(1, 3, [UserTurn("c")])  # item 2 was written elsewhere
    assert cache.get(1, 3) is None and len(cache) == 0


def test_least_recently_used_sessions_are_evicted() -> None:
    cache = WindowCache(limit=2, capacity=2)
    for session in (1, 2):
        cache.load(session, entries("x"), None)
    cache.get(1, 1)
    cache.load(3, entries("y"), None)
    assert cache.get(2, 1) is None and cache.get(1, 1) is not None and cache.get(3, 1) is not None


def test_the_cache_is_bounded_in_bytes_and_keeps_the_thread_in_use() -> None:
    one = item_bytes(estimate_tokens(UserTurn("x" * 1000)))
    cache = WindowCache(limit=10, max_bytes=3 * one)
    for session in range(5):
        cache.load(session, [Entry(1, 0.0, UserTurn("x" * 1000))], None)
    assert len(cache) == 3 and cache.bytes <= 3 * one
    assert cache.get(4, 1) is not None  # the newest stays
