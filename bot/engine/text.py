"""Text as the bot keeps it: bounded first, then cleaned, the same for people and for models.

Cut to the limit first, so that the cost is linear in the limit whatever arrives; then drop what
could hide or disguise text (control characters, invisible format characters: Unicode tags,
zero-width characters, bidirectional controls), fold runs of combining marks, and normalise.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_MARKS = 4  # combining marks kept on one character ("zalgo" text is folded)


# Every invisible format character (Unicode category Cf, as of Unicode 14): the soft hyphen,
# Arabic and Syriac marks, zero-width characters and joiners, bidirectional controls, the word
# joiner and invisible operators, the byte order mark, interlinear annotations, and the tags
# (U+E0000 to U+E007F) that can spell hidden instructions.
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
_HIDDEN = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_FORMAT}]")
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a model's reply is held to: how much it may write per piece (replies, handoff
    reasons, tool calls), and how often it is asked again after announcing a transfer that it
    did not make."""

    reply: int = 8000
    reason: int = 300
    arguments: int = 16_000
    tool_result: int = 16_000
    transfer_retries: int = 1


def clean(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` characters, then cleaned; and whether it was cut."""
    cut = len(text) > limit
    if cut:
        text = text[:limit]
        space = text.rfind(" ", max(0, limit - 200))
        text = text[:space] if space > 0 else text
    if text.isascii():
        return _HIDDEN.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip(), cut
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become "?"
    text = _HIDDEN.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if _MARKS.search(text):
        text = _fold_marks(text)
    return unicodedata.normalize("NFC", text).strip(), cut


def bounded(text: str, limit: int, what: str = "reply") -> str:
    """Model text cleaned and cut to `limit`, saying so at the end when it was cut."""
    kept, cut = clean(text, limit)
    return f"{kept} …(the {what} was cut at {limit:,} characters)" if cut else kept


def _fold_marks(text: str) -> str:
    """At most `MAX_MARKS` combining marks on one character."""
    out: list[str] = []
    run = 0
    for char in text:
        if unicodedata.combining(char):
            run += 1
            if run > MAX_MARKS:
                continue
        else:
            run = 0
        out.append(char)
    return "".join(out)


def why_not_json(exc: ValueError) -> str:
    """What `json.loads` found wrong, in a few words (a number too long to read raises a plain
    `ValueError`, without a message of its own)."""
    return str(getattr(exc, "msg", "") or "a number is too long")
