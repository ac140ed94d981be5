"""YAML workflows: the shipped files load, and every malformed one names file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import WorkflowError
from bot.engine.loader import load_workflow

WORKFLOWS = Path(__file__).parents[2] / "workflows"

MINIMAL = """
start: Triage
agents:
  - name: Triage
    instructions: Route.
  - name: Returns
    instructions: Refund.
handoffs:
  - from: Triage
    to: [Returns]
"""


def test_ecommerce_matches_the_declared_topology() -> None:
    workflow = load_workflow(WORKFLOWS / "ecommerce.yaml")
    assert workflow.start == "Triage"
    assert {(e.source, e.target) for e in workflow.edges} == {
        ("Triage", "Returns"),
        ("Triage", "Orders"),
        ("Returns", "Orders"),
        ("Orders", "Returns"),
        ("Returns", "Triage"),
        ("Orders", "Triage"),
        ("Returns", "Fraud"),
    }
    assert workflow.is_terminal("Fraud") and workflow.agents["Fraud"].review
    fraud = next(t for t in workflow.handoffs("Returns") if t.target == "Fraud")
    assert fraud.description.startswith("Suspected return fraud or abuse: repeated refund claims")
    assert workflow.agents["Fraud"].display.name == "Fraud Review"
    assert workflow.agents["Fraud"].handoff_notice == "A specialist will look at this with you."
    assert workflow.agents["Returns"].handoff_notice is None
    assert workflow.agents["Returns"].display.emoji == ":package:"
    assert workflow.warnings == ()


def test_instructions_that_name_tool_identifiers_get_a_warning() -> None:
    from bot.engine.loader import parse_workflow

    text = MINIMAL.replace("instructions: Route.", "instructions: Call handoff_to_Returns.")
    workflow = parse_workflow(text)
    assert workflow.warnings == (
        "agent 'Triage': its instructions name the tool handoff_to_Returns; name the agent "
        'instead ("hand off to Returns"): models repeat tool names to customers',
    )
    for path in WORKFLOWS.glob("*.yaml"):
        assert load_workflow(path).warnings == (), path


def test_helpdesk_and_content() -> None:
    helpdesk = load_workflow(WORKFLOWS / "helpdesk.yaml")
    assert sorted((e.source, e.target) for e in helpdesk.edges) == [
        ("Billing", "Tech"),
        ("Tech", "Billing"),
        ("Triage", "Billing"),
        ("Triage", "Tech"),
    ]
    content = load_workflow(WORKFLOWS / "content.yaml")
    assert {(e.source, e.target) for e in content.edges} == {
        ("Researcher", "Writer"),
        ("Writer", "Editor"),
        ("Writer", "Researcher"),
    }
    back = next(t for t in content.handoffs("Writer") if t.target == "Researcher")
    assert back.description == "Need additional research, sources, or fact-checking."
    assert content.is_terminal("Editor")


def test_options_are_read(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        MINIMAL
        + "return_to_previous: false\nmax_handoffs_per_turn: 2\nmax_model_calls_per_turn: 7\n"
        + "autonomous:\n  agents: [Returns]\n  turn_limits: {Returns: 4}\n"
        + "termination: tests.unit.test_loader.never\n"
    )
    workflow = load_workflow(path)
    assert not workflow.return_to_previous
    assert (workflow.limits.max_handoffs, workflow.limits.max_model_calls) == (2, 7)
    assert workflow.autonomy["Returns"].turn_limit == 4 and "Triage" not in workflow.autonomy
    assert workflow.termination is never
    assert workflow.name == "w"


def never(items: object) -> bool:
    """A termination condition that never fires."""
    return False


def lookup_order(order_id: int) -> str:
    """Look up an order by number."""
    return f"order {order_id}: shipped"


def test_tools_are_imported_by_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        MINIMAL.replace(
            "    instructions: Refund.",
            "    instructions: Refund.\n    tools: [tests.unit.test_loader.lookup_order]",
        )
    )
    tool = load_workflow(path).agents["Returns"].function_tools[0]
    assert tool.name == "lookup_order" and tool.description == "Look up an order by number."


BAD_YAML = [
    (
        MINIMAL.replace("start: Triage\n", ""),
        "start: is required. Fix: add this field",
    ),
    (
        MINIMAL.replace("    to: [Returns]", "    to: [Returns, Refunds]"),
        "handoffs[0].to[1]: unknown agent 'Refunds'. Fix: use one of: Returns, Triage",
    ),
    (
        MINIMAL.replace("  - from: Triage", "  - from: Trige"),
        "handoffs[0].from: unknown agent 'Trige'. Fix: use one of: Returns, Triage",
    ),
    (
        MINIMAL.replace("    instructions: Refund.", "    instructions: Refund.\n    colour: red"),
        "agents[1].colour: is not a known field. Fix: remove it, or check its spelling",
    ),
    (
        MINIMAL.replace("    instructions: Route.\n", ""),
        "agents[0].instructions: is required. Fix: add this field",
    ),
    (
        MINIMAL + "max_handoffs_per_turn: lots\n",
        "max_handoffs_per_turn: input should be a valid integer",
    ),
    (
        MINIMAL.replace("  - name: Returns", "  - name: Triage"),
        "agents[1].name: duplicate agent name 'Triage'. Fix: make names unique",
    ),
    (
        MINIMAL.replace("    to: [Returns]", "    to: [Triage]"),
        "handoffs[0].to[0]: 'Triage' hands off to itself. Fix: remove the self-edge",
    ),
    (
        MINIMAL.replace(
            "    instructions: Refund.", "    instructions: Refund.\n    review: admins"
        ),
        "agents[1].review: input should be 'moderators'",
    ),
    (
        MINIMAL.replace(
            "    instructions: Refund.",
            "    instructions: Refund.\n    tools: [nowhere.module.func]",
        ),
        "agents[1].tools[0]: cannot import 'nowhere.module.func' (ModuleNotFoundError",
    ),
    (
        MINIMAL.replace(
            "    instructions: Refund.",
            "    instructions: Refund.\n    tools: [tests.unit.test_loader.takes_anything]",
        ),
        "agents[1].tools[0]: tool takes_anything: *args and **kwargs cannot be offered to a "
        "model. Fix: name each argument, with a type hint",
    ),
    (
        MINIMAL.replace(
            "    instructions: Refund.",
            "    instructions: Refund.\n    tools: [tests.unit.test_loader.mystery_hint]",
        ),
        "agents[1].tools[0]: tool mystery_hint: its signature or type hints cannot be read "
        "(NameError: name 'Undeclared' is not defined). Fix: import every type the hints name",
    ),
    (
        MINIMAL.replace("    to: [Returns]", "    to: [Returns\n  oops: ]"),
        "line 11, column 7: expected ',' or ']', but got ':'. Fix: fix the YAML syntax",
    ),
    ("- just\n- a list\n", "file: is not a mapping of workflow fields"),
]


def takes_anything(*args: str) -> str:
    """A function no model can call: its arguments have no names."""
    return ""


def mystery_hint(order: Undeclared) -> str:  # type: ignore[name-defined]  # noqa: F821
    """A function whose type hint names a type nobody imported."""
    return ""


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_bad_yaml_names_file_field_and_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    assert f"{path}: {message}" in str(caught.value), str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"nope\.yaml: file: cannot be read"):
        load_workflow(tmp_path / "nope.yaml")


EVERY_MISTAKE = """
agents:
  - name: Triage
    instructions: Route.
    colour: red
  - name: Returns
    instructions: Refund.
    tools: [nowhere.module.lookup]
  - name: Returns
    instructions: Again.
  - name: Orders
handoffs:
  - from: Triage
    to: [Returns, Refunds, Orders]
  - from: Ghost
    to: [Triage]
max_handoffs_per_turn: lots
"""


def test_every_problem_is_listed_in_one_pass(tmp_path: Path) -> None:
    """Schema problems (a missing start, an unknown field, a missing field, a bad number) do not
    hide the tools' and the graph's (a bad tool path, a duplicate name, unknown agents)."""
    path = tmp_path / "broken.yaml"
    path.write_text(EVERY_MISTAKE)
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    lines = str(caught.value).splitlines()
    assert [line.split(". Fix: ")[0] for line in lines] == [
        f"{path}: start: is required",
        f"{path}: agents[0].colour: is not a known field",
        f"{path}: agents[1].tools[0]: cannot import 'nowhere.module.lookup' "
        "(ModuleNotFoundError: No module named 'nowhere')",
        f"{path}: agents[2].name: duplicate agent name 'Returns'",
        f"{path}: agents[3].instructions: is required",
        f"{path}: handoffs[0].to[1]: unknown agent 'Refunds'",
        f"{path}: handoffs[1].from: unknown agent 'Ghost'",
        f"{path}: max_handoffs_per_turn: input should be a valid integer, unable to parse "
        "string as an integer",
    ]


def test_problems_keep_their_place_in_the_file_when_an_entry_is_left_out() -> None:
    """An agent without a usable name cannot be built; the problems after it still name the
    entries where the file has them, and a handoff with a bad reason still has its edges checked."""
    from bot.engine.loader import parse_workflow

    text = """
start: B
agents:
  - {name: "", instructions: x}
  - {name: B, instructions: y}
  - {name: B, instructions: z}
handoffs:
  - {from: B, to: [Nobody], reason: [not, text]}
"""
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(text)
    assert [line.split(". Fix: ")[0] for line in str(caught.value).splitlines()] == [
        "<workflow>: agents[0].name: string should have at least 1 character",
        "<workflow>: agents[2].name: duplicate agent name 'B'",
        "<workflow>: handoffs[0].reason: input should be a valid string",
        "<workflow>: handoffs[0].to[0]: unknown agent 'Nobody'",
    ]


def test_a_tool_module_that_fails_to_load_is_a_problem_of_its_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_tools.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "w.yaml"
    path.write_text(
        MINIMAL.replace(
            "    instructions: Refund.",
            "    instructions: Refund.\n    tools: [broken_tools.lookup]",
        )
    )
    with pytest.raises(WorkflowError, match=r"agents\[1\]\.tools\[0\]: cannot import "):
        load_workflow(path)
