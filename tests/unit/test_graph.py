"""`mermaid`: edges are labelled only where the workflow gives a reason for them."""

from __future__ import annotations

from bot.engine import Agent, HandoffBuilder
from bot.engine.graph import mermaid
from bot.engine.loader import parse_workflow


def test_only_edges_with_a_reason_are_labelled() -> None:
    triage = Agent("Triage", "Route.", description="Routes everything.")
    returns = Agent("Returns", "Refund.", description="Returns and refunds of an order.")
    fraud = Agent("Fraud", "Review.", description="Reviews suspected fraud.", review=True)
    workflow = (
        HandoffBuilder(participants=[triage, returns, fraud])
        .with_start_agent(triage)
        .add_handoff(triage, [returns])
        .add_handoff(returns, [triage])
        .add_handoff(returns, [fraud], description='Suspected "empty box" fraud.')
        .build()
    )
    lines = mermaid(workflow).splitlines()
    edges = [line.strip() for line in lines if "-->" in line]
    assert edges == [
        "a0_Triage --> a1_Returns",
        "a1_Returns --> a0_Triage",
        'a1_Returns -->|"Suspected #quot;empty box#quot; fraud."| a2_Fraud',
    ]
    assert not any("Returns and refunds" in line or "Routes everything" in line for line in lines)


def test_a_yaml_reason_is_the_label_and_the_default_mesh_has_none() -> None:
    text = """
start: A
agents:
  - {name: A, instructions: x, description: Does A things.}
  - {name: B, instructions: y, description: Does B things.}
handoffs:
  - {from: A, to: [B], reason: "Needs B,\\nnow."}
"""
    assert '    a0_A -->|"Needs B, now."| a1_B' in mermaid(parse_workflow(text)).splitlines()
    mesh = parse_workflow(text.split("handoffs:")[0])
    edges = [line.strip() for line in mermaid(mesh).splitlines() if "-->" in line]
    assert edges == ["a0_A --> a1_B", "a1_B --> a0_A"]
