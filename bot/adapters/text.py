"""Text for chat platforms: split long replies cleanly, and neutralise pings in Slack text."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```.*?```", re.DOTALL)
_PARAGRAPH = re.compile(r"\n\s*\n")


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into posts of at most `limit` characters.

    Breaks fall between paragraphs, then lines, then words; a code block stays whole when it
    fits in one post, and is otherwise split by lines, each part fenced again.
    """
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    posts: list[str] = []
    for unit in _units(text):
        for piece in _fit(unit, limit):
            if posts and len(posts[-1]) + 2 + len(piece) <= limit:
                posts[-1] += "\n\n" + piece
            else:
                posts.append(piece)
    return posts


def _units(text: str) -> list[str]:
    """Paragraphs and whole fenced code blocks, in order."""
    units: list[str] = []
    position = 0
    for match in _FENCE.finditer(text):
        units.extend(_paragraphs(text[position : match.start()]))
        units.append(match.group(0))
        position = match.end()
    units.extend(_paragraphs(text[position:]))
    return units


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in _PARAGRAPH.split(text) if part.strip()]


def _fit(unit: str, limit: int) -> list[str]:
    if len(unit) <= limit:
        return [unit]
    if unit.startswith("```") and unit.endswith("```") and limit > 8:
        header, _, body = unit[3:-3].partition("\n")
        inner = limit - len(header) - 8
        if inner > 0:
            lines = body.strip("\n").split("\n")
            return [f"```{header}\n{part}\n```" for part in _pack(lines, "\n", inner)]
    return _pack(unit.split("\n"), "\n", limit)


def _pack(parts: list[str], separator: str, limit: int) -> list[str]:
    """Greedily join parts with `separator` into pieces within `limit`; split finer if needed."""
    pieces: list[str] = []
    for part in parts:
        if len(part) > limit:
            finer = _pack(part.split(" "), " ", limit) if separator == "\n" else None
            pieces.extend(finer or [part[i : i + limit] for i in range(0, len(part), limit)])
            continue
        if pieces and len(pieces[-1]) + len(separator) + len(part) <= limit:
            pieces[-1] += separator + part
        else:
            pieces.append(part)
    return [piece for piece in pieces if piece.strip()]


def escape_slack(text: str) -> str:
    """Escape `&`, `<`, `>` so model or user text can never ping (`<!channel>`, `<@U1>`) or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
