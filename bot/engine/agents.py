"""Agents: a name, what they do, how they speak, and the tools they may call."""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine.tools import FunctionTool, ToolFunction, as_tool


@dataclass(frozen=True, slots=True)
class Persona:
    """How an agent appears in a chat: display name, Slack emoji, Discord avatar URL."""

    name: str
    emoji: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True, slots=True)
class Agent:
    """One participant of a workflow. Holds no model client: the model is injected at run time.

    `tools` accepts `FunctionTool`s or plain functions; they are wrapped on construction.
    `handoff_notice` is what the customer sees when the conversation is handed to this agent:
    None for the usual line ("Triage handed you to Returns: <reason>"; for a review agent, a
    neutral line without the reason), "" for nothing, or a line of its own.
    """

    name: str
    instructions: str = ""
    description: str = ""
    persona: Persona | None = None
    tools: tuple[FunctionTool | ToolFunction, ...] = ()
    model: str | None = None
    review: bool = False
    handoff_notice: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tools", tuple(as_tool(tool) for tool in self.tools))

    @property
    def function_tools(self) -> tuple[FunctionTool, ...]:
        """The agent's tools, each wrapped as a `FunctionTool`."""
        return tuple(as_tool(tool) for tool in self.tools)

    @property
    def display(self) -> Persona:
        """The persona to post as: the declared one, or the agent's own name."""
        return self.persona or Persona(self.name)
