"""A workflow as a Mermaid flowchart: agents, edges (labelled where they give a reason), and
start, terminal and review marks."""

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
        # Only a reason given on the edge is drawn: the target's description, which the model
        # reads otherwise, would repeat on every edge into it and bury the picture in labels.
        label = f"|{_quote(edge.reason)}|" if edge.reason else ""
        lines.append(f"    {ids[edge.source]} -->{label} {ids[edge.target]}")
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
