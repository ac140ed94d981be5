"""A workflow as a Mermaid flowchart: agents, edges (labelled where they give a reason, dotted
where a condition enables them), and start, terminal and review marks; a pipeline as its steps
in order, with its review pauses."""

from __future__ import annotations

import re

from bot.engine.workflow import Workflow

_ID = re.compile(r"[^A-Za-z0-9_]")


def mermaid(workflow: Workflow) -> str:
    """Mermaid `flowchart LR` text for the workflow."""
    ids = {name: f"a{index}_{_ID.sub('_', name)}" for index, name in enumerate(workflow.agents)}
    lines = ["flowchart LR"]
    if workflow.sequential:
        return _pipeline(workflow, ids)
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
        said = [edge.reason] if edge.reason else []
        if edge.when is not None:
            said.append(f"when {getattr(edge.when, '__name__', 'a condition')}")
        label = f"|{_quote('; '.join(said))}|" if said else ""
        arrow = "-.->" if edge.when is not None else "-->"
        lines.append(f"    {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    terminal = [ids[name] for name in workflow.agents if workflow.is_terminal(name)]
    review = [ids[name] for name in workflow.agents if workflow.agents[name].review]
    lines.append("    classDef terminal stroke-width:3px")
    lines.append("    classDef review fill:#fde2e2,stroke:#c0392b")
    if terminal:
        lines.append(f"    class {','.join(terminal)} terminal")
    if review:
        lines.append(f"    class {','.join(review)} review")
    return "\n".join(lines) + "\n"


def _pipeline(workflow: Workflow, ids: dict[str, str]) -> str:
    """A pipeline: its steps left to right, a review pause drawn between two steps."""
    lines = ["flowchart LR"]
    for index, name in enumerate(workflow.order):
        marks = ["start"] if index == 0 else []
        if index == len(workflow.order) - 1:
            marks.append("replies")
        label = _quote(name + (f" ({', '.join(marks)})" if marks else ""))
        lines.append(f"    {ids[name]}{f'([{label}])' if index == 0 else f'[{label}]'}")
    for name in workflow.order[:-1]:
        following = workflow.after(name)
        assert following is not None
        if name in workflow.review_after:
            pause = f"{ids[name]}_review"
            lines.append(f"    {pause}{{{{{_quote('review: a person approves')}}}}}")
            lines.append(f"    {ids[name]} --> {pause} -->|approved| {ids[following]}")
            lines.append(f"    {pause} -.->|rejected: again| {ids[name]}")
        else:
            lines.append(f"    {ids[name]} --> {ids[following]}")
    paused = [f"{ids[name]}_review" for name in workflow.order if name in workflow.review_after]
    lines.append("    classDef review fill:#fde2e2,stroke:#c0392b")
    if paused:
        lines.append(f"    class {','.join(paused)} review")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", " ") + '"'
