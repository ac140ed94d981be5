"""What small models write instead of what they mean, read as what they mean.

Local models served without a tool-call parser (llama.cpp, Ollama, vLLM with some templates)
often write a call as text, name a tool in another case, announce a transfer without making it, or
start a reply with a speaker's label. Each rule here turns such a reply into the call or the plain
reply that was meant, so that none of it reaches the customer:

- a tool call written as a JSON object (bare, in a fenced block, or in `<tool_call>` tags) that
  names a tool, or the agent a handoff tool reaches, becomes that tool call; any text around it
  is dropped;
- a tool name that matches an offered one but for case is that tool;
- a reply that announces a transfer to another agent without the call, or repeats the bot's own
  words (a handoff note, a tool's error), is a `Slip`: the runner asks once more, and, failing
  that, makes the handoff it announced or shows nothing;
- a leading `[Agent]` or `Agent:` label is removed, and a tool identifier in the text becomes the
  agent's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from bot.engine.handoffs import HANDOFF_PREFIX
from bot.models.base import JUST_HANDED, ChatMessage, ModelReply, ToolCall

_FENCED = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_IDENTIFIER = re.compile(re.escape(HANDOFF_PREFIX) + r"([A-Za-z0-9_-]+)", re.IGNORECASE)
_OBJECT = r"(?:you|this|it|the conversation|your (?:case|request|question|chat))"
_VERBS = (
    rf"transfer\w*|connect\w* you|forward\w* {_OBJECT}|redirect\w*|escalat\w*|"
    rf"put(?:ting)? you through|pass\w* {_OBJECT}|hand\w* {_OBJECT} (?:over|off)|"
    r"hand\w* (?:over|off)|send\w* you"
)
_INTENT = re.compile(rf"\b(?:{_VERBS})\b", re.IGNORECASE)
_ROLE = r"(?:team|department|agent|specialist|colleague|desk|experts?)"
_NEGATED = re.compile(r"\b(?:not|n't|cannot|unable|no need)\b", re.IGNORECASE)


def tool_names(tools: Iterable[str], agents: Mapping[str, str]) -> dict[str, str]:
    """Every spelling a model may use for a tool, folded, to the tool's name: the tools' own
    names, and the names of the agents their handoff tools reach (`agents`: name to tool)."""
    names = {name.casefold(): name for name in tools}
    names.update((agent.casefold(), tool) for agent, tool in agents.items())
    return names


def as_tool_calls(reply: ModelReply, names: Mapping[str, str]) -> ModelReply:
    """The reply with its calls named as offered, and calls written as text made calls.

    `names` maps folded spellings to tool names (see `tool_names`): the tools of this request,
    and every other tool of the workflow (a call written to one of those, or to any
    `handoff_to_` name, is still a call: the runner refuses it).
    """
    calls = tuple(replace(call, name=_named(call.name, names)) for call in reply.tool_calls)
    if not calls and reply.text:
        calls = _written_calls(reply.text, names)
        if calls:
            return replace(reply, text=None, tool_calls=calls, finish_reason="tool_calls")
        wrapped = _wrapped(reply.text)
        if wrapped is not None:  # a call to a tool nobody offered
            name, arguments = wrapped
            said = [value for value in arguments.values() if isinstance(value, str)]
            if len(said) == 1:  # {"name": "greeting", "arguments": {"message": "Hello!"}}
                return replace(reply, text=said[0])
            call = ToolCall("text_call_0", name, json.dumps(arguments, ensure_ascii=False))
            return replace(reply, text=None, tool_calls=(call,), finish_reason="tool_calls")
    return replace(reply, tool_calls=calls)


def _named(name: str, names: Mapping[str, str]) -> str:
    return names.get(name.casefold(), name)


def _written_calls(text: str, names: Mapping[str, str]) -> tuple[ToolCall, ...]:
    """Tool calls written out as JSON in `text`."""
    pieces = [*_TAGGED.findall(text), *_FENCED.findall(text)] or [text]
    calls: list[ToolCall] = []
    for piece in pieces:
        for found in _objects(piece):
            call = _call(found, names)
            if call is not None:
                calls.append(ToolCall(f"text_call_{len(calls)}", *call))
    return tuple(calls)


def _objects(text: str) -> list[object]:
    """Every JSON value that starts at a `{` or `[` of `text` and parses, outermost first."""
    decoder = json.JSONDecoder()
    found: list[object] = []
    index = 0
    while (index := _next_open(text, index)) >= 0:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:  # JSONDecodeError, or a number too long to read
            index += 1
            continue
        found.extend(value if isinstance(value, list) else [value])
        index = end
    return found


def _next_open(text: str, start: int) -> int:
    braces = [i for i in (text.find("{", start), text.find("[", start)) if i >= 0]
    return min(braces) if braces else -1


def _call(value: object, names: Mapping[str, str]) -> tuple[str, str] | None:
    """(name, arguments JSON) of a call-shaped object naming a tool, else None."""
    shaped = _shaped(value)
    if shaped is None:
        return None
    name, arguments = shaped
    if name.casefold() not in names and not name.casefold().startswith(HANDOFF_PREFIX):
        return None
    return _named(name, names), json.dumps(arguments, ensure_ascii=False)


def _wrapped(text: str) -> tuple[str, dict[str, Any]] | None:
    """A reply that is nothing but one call-shaped object (to any name), as (name, arguments)."""
    pieces = [*_TAGGED.findall(text), *_FENCED.findall(text)] or [text]
    found = [value for piece in pieces for value in _objects(piece)]
    if len(found) != 1 or len(pieces) != 1 or not pieces[0].strip().startswith(("{", "[")):
        return None
    value = found[0]
    keys = set(value) | set(value.get("function") or {}) if isinstance(value, dict) else set()
    return _shaped(value) if {"arguments", "parameters"} & keys else None


def _shaped(value: object) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) of an object shaped as a tool call, else None."""
    if not isinstance(value, dict):
        return None
    found: dict[str, Any] = value
    if isinstance(found.get("function"), dict):
        found = found["function"]
    name = found.get("name") or found.get("tool")
    if not isinstance(name, str):
        return None
    arguments = found.get("arguments", found.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:  # JSONDecodeError, or a number too long to read
            arguments = {}
    return name, arguments if isinstance(arguments, dict) else {}


@dataclass(frozen=True, slots=True)
class Slip:
    """A reply the customer must not see as written: a transfer announced without the call
    (`target`), or the bot's own workings (its notes, a tool's result, its tools) repeated."""

    kind: Literal["announced", "echoed"]
    target: str | None = None

    def correction(self, targets: Sequence[str]) -> str:
        """What the agent is told before it is asked again."""
        if self.kind == "echoed":
            return (
                "Your last message spoke of the support system's inner workings (its notes, "
                "tools or results), which the customer must not see, and the customer has not "
                "seen it. Answer the customer's last message in your own words."
            )
        target = self.target
        if target in targets:
            return (
                f"Your last message told the customer you would transfer them to {target}, but "
                f"you did not call the tool, and the customer has not seen that message. If "
                f"{target} should take over, call its tool now and write nothing else. "
                "Otherwise answer the customer yourself, without mentioning a transfer."
            )
        reach = f"you can hand it to {', '.join(targets)}" if targets else "you cannot hand it over"
        return (
            f"Your last message told the customer you would transfer them to {target}, but "
            f"{target} cannot take this conversation from you ({reach}), and the customer has "
            "not seen that message. Answer the customer yourself, without mentioning a transfer."
        )


def slip(
    text: str, speaker: str, agents: Sequence[str], messages: Sequence[ChatMessage]
) -> Slip | None:
    """Whether a text reply of `speaker` to `messages` is a slip, and which."""
    target = announced(text, agents, speaker)
    if target is not None:
        return Slip("announced", target)
    return Slip("echoed") if echoed(text, messages) else None


def echoed(text: str, messages: Sequence[ChatMessage]) -> bool:
    """Whether a reply repeats the bot's own workings: a tool's error or result, a note, or
    the handoff tools themselves."""
    said = _plain(text)
    if said.startswith("error:") or any(phrase in said for phrase in _NOTES):
        return True
    if _TOOL_TALK.search(text):
        return True
    for message in messages:
        if message.role == "tool" and message.content:
            result = _plain(message.content)
            if len(result) >= 20 and (said == result or result[:60] in said):
                return True
    return False


def _plain(text: str) -> str:
    return " ".join(text.casefold().split())


_NOTES = (JUST_HANDED, "handed this conversation to", "told the customer:")
_TOOL_TALK = re.compile(
    r"\b(?:call|use|invoke|run)\w* (?:the |a |my )?`?[\w-]+`? (?:function|tool)\b|\bhandoff tool",
    re.IGNORECASE,
)


def announced(text: str, agents: Sequence[str], speaker: str) -> str | None:
    """The agent a reply says it transfers the customer to, without calling the tool."""
    for sentence in re.split(r"(?<=[.!?\n])\s+", text):
        identifier = _IDENTIFIER.search(sentence)
        if identifier is not None:
            named = _agent(identifier.group(1).replace("_", " "), agents, speaker) or _agent(
                identifier.group(1), agents, speaker
            )
            if named is not None:
                return named
        intent = _INTENT.search(sentence)
        if intent is None or _NEGATED.search(sentence[: intent.start()]):
            continue
        named = _agent(sentence[intent.end() :], agents, speaker)
        if named is not None:
            return named
    return None


def _agent(text: str, agents: Sequence[str], speaker: str) -> str | None:
    """The first other agent `text` names: as declared, or in lower case before "team" etc."""
    for agent in agents:
        name = re.escape(agent)
        if agent != speaker and (
            re.search(rf"\b{name}\b", text)
            or re.search(rf"\b{name}\s+{_ROLE}\b", text, re.IGNORECASE)
        ):
            return agent
    return None


_LEAK = re.compile(
    rf"^\s*\[[^\]\n]{{1,40}}\]|\{{\s*\"(?:name|function|tool)\"\s*:|{HANDOFF_PREFIX}|"
    rf"{JUST_HANDED}|^\s*error:",
    re.IGNORECASE,
)


def leaks(text: str) -> bool:
    """Whether a reply as posted shows what the customer should not see: a `[Name]` label,
    tool-call JSON, a tool identifier, a handoff note or a tool's error."""
    return _LEAK.search(text) is not None


def unlabelled(text: str, speakers: Sequence[str]) -> str:
    """`text` without leading speaker labels, with tool identifiers written as agent names."""
    if speakers:
        names = "|".join(re.escape(name) for name in sorted(speakers, key=len, reverse=True))
        label = re.compile(
            rf"^\s*(?:\[(?:{names})\]\s*:?|\*{{0,2}}(?:{names})\*{{0,2}}\s*:\*{{0,2}})\s*"
        )
        while (match := label.match(text)) is not None and match.end() < len(text):
            text = text[match.end() :]
    return _IDENTIFIER.sub(lambda found: found.group(1).replace("_", " "), text)
