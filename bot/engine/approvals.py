"""What an agent is told of a decision that waits for a person: a call that needs approval (that
it waits, then the verdict and what the call returned), and a pipeline's review pause."""

from __future__ import annotations

AWAITING_APPROVAL = (
    "Not run yet: this call needs a moderator's approval, and a moderator has been asked. Tell "
    "the customer briefly that a person on the team must approve it and that you will come back "
    "in this conversation; do not call it again, and do not say it is done."
)


STILL_AWAITING_APPROVAL = (
    "Not run: this same call already waits for a moderator's approval. Tell the customer it is "
    "still being reviewed; do not call it again."
)


def decided(note: str, tool: str) -> bool:
    """Whether a note to an agent gives the verdict on its call to `tool`."""
    return f"your call to {tool}" in note


def approved(tool: str, result: str, is_error: bool) -> str:
    """The note that gives the agent an approved call's result."""
    outcome = "it failed" if is_error else "it ran"
    return (
        f"A moderator approved your call to {tool}, and {outcome}. Its result: {result}\n"
        "Tell the customer what happened, in a few words, based only on this result."
    )


def rejected(tool: str) -> str:
    """The note that tells the agent a moderator rejected its call."""
    return (
        f"A moderator rejected your call to {tool}: it did not run. Tell the customer politely "
        "that the request could not be approved, without guessing why, and offer what you can "
        "still do."
    )


def reviewed(step: str, approved: bool, reader: str) -> str:
    """The note that tells a pipeline's agent the verdict on `step`'s step (a moderator's note,
    if any, is in the transcript beside it)."""
    if approved:
        return f"A reviewer approved {step}'s step. Go on with your step."
    whose = "your" if reader == step else f"{step}'s"
    return f"A reviewer rejected {whose} step. Do it again, following the reviewer's note if any."
