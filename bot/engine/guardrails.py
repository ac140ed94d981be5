"""Guardrails: checks on what the customer writes (input) and what an agent replies (output).

A guardrail looks at a text and either lets it pass, rewrites it (`redact_pii` masks email
addresses and card numbers) or trips with a reason. A tripped input guardrail answers the
customer politely without asking the model; a tripped output guardrail replaces the reply. Both
are recorded in the transcript as a notice (`record`), where `stats` counts them (`tripped`).

Built-ins: `max_length: N`, `blocked_words: [...]`, `redact_pii: true`. Any other guardrail is a
function of the text returning None or True (pass), False (trip) or a reason (trip).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

INPUT_BLOCKED = (
    "I'm sorry, I can't take that message as it is. Could you say it another way, without "
    "anything sensitive?"
)
OUTPUT_BLOCKED = "I'm sorry, I can't share that answer. Could you ask it another way?"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


@dataclass(frozen=True, slots=True)
class Checked:
    """What a guardrail made of a text: the text to go on with, and why it tripped (if it did)."""

    text: str
    tripped: str | None = None


@dataclass(frozen=True, slots=True)
class Guardrail:
    """A named check of a text."""

    name: str
    check: Callable[[str], Checked]


@dataclass(frozen=True, slots=True)
class Guardrails:
    """The input and output guardrails of a workflow or an agent."""

    input: tuple[Guardrail, ...] = ()
    output: tuple[Guardrail, ...] = ()

    def __add__(self, other: Guardrails) -> Guardrails:
        return Guardrails(self.input + other.input, self.output + other.output)

    @property
    def redacts_input(self) -> bool:
        return any(guard.name == "redact_pii" for guard in self.input)


NONE = Guardrails()
_RECORD = re.compile(r"^Guardrail (\w+) \((input|output)\): ")


def record(stage: str, guard: Guardrail, reason: str) -> str:
    """The transcript's note of a tripped guardrail."""
    return f"Guardrail {guard.name} ({stage}): {reason}"


def tripped(note: str) -> tuple[str, str] | None:
    """The guardrail and stage a transcript note records as tripped, if it is such a note."""
    found = _RECORD.match(note)
    return (found[1], found[2]) if found else None


def run(guards: Sequence[Guardrail], text: str) -> tuple[str, Guardrail | None, str | None]:
    """Apply `guards` in order: the text as they leave it, and the first that tripped (with
    its reason), after which no other runs."""
    for guard in guards:
        checked = guard.check(text)
        if checked.tripped is not None:
            log.info("guardrail %s tripped", guard.name)
            return checked.text, guard, checked.tripped
        text = checked.text
    return text, None, None


def redact(text: str) -> str:
    """Email addresses and card numbers masked."""
    text = _EMAIL.sub("[email]", text)
    return _CARD.sub(lambda found: "[card ending " + re.sub(r"\D", "", found[0])[-4:] + "]", text)


def max_length(limit: int) -> Guardrail:
    def check(text: str) -> Checked:
        too_long = len(text) > limit
        return Checked(text, f"longer than {limit:,} characters" if too_long else None)

    return Guardrail("max_length", check)


def blocked_words(words: Sequence[str]) -> Guardrail:
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.I)

    def check(text: str) -> Checked:
        found = pattern.search(text) if words else None
        return Checked(text, f"a blocked word ({found[0].lower()!r})" if found else None)

    return Guardrail("blocked_words", check)


def redact_pii() -> Guardrail:
    return Guardrail("redact_pii", lambda text: Checked(redact(text)))


def from_function(name: str, function: Callable[[str], object]) -> Guardrail:
    """A guardrail of a function: None or True passes; False or a reason trips. A function
    that fails trips too (a check that cannot say yes says no)."""

    def check(text: str) -> Checked:
        try:
            verdict = function(text)
        except Exception as exc:
            log.warning("guardrail %s failed (%s): taken as tripped", name, type(exc).__name__)
            return Checked(text, f"the check failed ({type(exc).__name__})")
        if verdict is None or verdict is True:
            return Checked(text)
        return Checked(text, verdict if isinstance(verdict, str) and verdict else "refused")

    return Guardrail(name, check)
