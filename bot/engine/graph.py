"""A workflow as a Mermaid flowchart: agents, edges with their reasons, start/terminal/review."""

from __future__ import annotations

import re

from bot.engine.workflow import Workflow

_ID = re.compile(r"[^A-Za-z0-9_]")


def mermaid(workflow: Workflow) -> str:
    """Mermaid `flowchart LR` text for the workflow."""
    ids = {name: f"a{index}_{_ID.sub('_', name)}" for index, name in enumerate(workflow.agents)}
    lines = ["flowchart LR"]
    for name in workflow.agents:
        marks = []
        if name == workflow.start:
            marks.append("start")
        if workflow.is_terminal(name):
            marks.append("terminal")
        if workflow.agents[name].review:
            marks.append("review: moderators")
        label = _quote(name + (f" ({', '.join(marks)})" if marks else ""))
        shape = f"([{label}])" if name == workflow.start else f"[{label}]"
        lines.append(f"    {ids[name]}{shape}")
    for edge in workflow.edges:
        reason = next(
            tool.description
            for tool in workflow.handoffs(edge.source)
            if tool.target == edge.target
        )
        lines.append(f"    {ids[edge.source]} -->|{_quote(reason)}| {ids[edge.target]}")
    terminal = [ids[name] for name in workflow.agents if workflow.is_terminal(name)]
    review = [ids[name] for name in workflow.agents if workflow.agents[name].review]
    lines.append("    classDef terminal stroke-width:3px")
    lines.append("    classDef review fill:#fde2e2,stroke:#c0392b")
    if terminal:
        lines.append(f"    class {','.join(terminal)} terminal")
    if review:
        lines.append(f"    class {','.join(review)} review")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", " ") + '"'
