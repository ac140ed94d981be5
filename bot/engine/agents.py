"""Agents: a name, what they do, how they speak, and the tools they may call."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.engine.guardrails import NONE, Guardrails
from bot.engine.tools import Tool, ToolFunction, as_tool


@dataclass(frozen=True, slots=True)
class Persona:
    """How an agent appears in a chat: display name, Slack emoji, Discord avatar URL."""

    name: str
    emoji: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class McpServer:
    """An MCP server an agent takes tools from: a `command` run over stdio (with `args` and
    `env` added to the bot's environment), or a streamable HTTP `url`."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    url: str | None = None

    @property
    def label(self) -> str:
        """How logs, `check` and `doctor` name it: never its environment, nor what looks like a
        credential in its URL or arguments (a URL's user and password or query, the value of
        an argument or `NAME=` that names a secret, a header)."""
        if self.url:
            return _hide_in_url(self.url.split("?")[0])
        shown: list[str] = []
        for arg in (self.command or "", *self.args):
            after_secret = bool(shown) and _SECRET_FLAG.match(shown[-1]) is not None
            if after_secret and not arg.startswith("-"):
                shown.append("***")
            elif "=" in arg and _SECRET_NAME.search(arg.split("=", 1)[0]):
                shown.append(arg.split("=", 1)[0] + "=***")
            else:
                shown.append(_hide_in_url(arg))
        return " ".join(shown)


def _hide_in_url(text: str) -> str:
    return _USER_IN_URL.sub(r"\1", text)


_SECRET = r"token|key|secret|password|passwd|auth|credential|bearer|header"
_SECRET_NAME = re.compile(_SECRET, re.I)
_SECRET_FLAG = re.compile(rf"^(-H|--?[\w-]*({_SECRET})[\w-]*)$", re.I)
_USER_IN_URL = re.compile(r"(\w+://)[^/@\s]*@")


@dataclass(frozen=True, slots=True)
class Agent:
    """One participant of a workflow. Holds no model client: the model is injected at run time.

    `tools` accepts tools (`FunctionTool`s) or plain functions; they are wrapped on
    construction. `mcp`: servers whose tools the agent gets too, once they are connected
    (`bot.engine.mcp`).
    `handoff_notice` is what the customer sees when the conversation is handed to this agent:
    None for the usual line ("Triage handed you to Returns: <reason>"; for a review agent, a
    neutral line without the reason), "" for nothing, or a line of its own.
    """

    name: str
    instructions: str = ""
    description: str = ""
    persona: Persona | None = None
    tools: tuple[Tool | ToolFunction, ...] = ()
    model: str | None = None
    review: bool = False
    handoff_notice: str | None = None
    mcp: tuple[McpServer, ...] = ()
    guardrails: Guardrails = NONE  # besides the workflow's

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(as_tool(tool) for tool in self.tools))

    @property
    def function_tools(self) -> tuple[Tool, ...]:
        """The agent's tools (handoffs aside), wrapped when the agent was made."""
        return self.tools  # type: ignore[return-value]

    @property
    def display(self) -> Persona:
        """The persona to post as: the declared one, or the agent's own name."""
        return self.persona or Persona(self.name)
