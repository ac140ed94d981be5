"""Function tools: arguments validated from type hints; every failure is a result, not a crash."""

from __future__ import annotations

import threading

import pytest

from bot.engine import Agent, HandoffBuilder, ToolCalled, function_tool
from bot.testing import ScriptedModel, call, say
from tests.helpers import run_turn


def refund(order_id: int, amount: float = 0.0, note: str | None = None) -> dict[str, object]:
    """Issue a refund.

    Longer text that is not part of the description.
    """
    return {"order": order_id, "amount": amount, "note": note}


async def slow_lookup(order_id: int) -> str:
    """Look up an order."""
    return f"order {order_id} shipped"


def broken(order_id: int) -> str:
    """Always fails."""
    raise RuntimeError("database offline")


def test_spec_comes_from_the_signature_and_docstring() -> None:
    spec = function_tool(refund).spec
    assert spec.name == "refund" and spec.description == "Issue a refund."
    assert spec.parameters["required"] == ["order_id"]
    assert spec.parameters["properties"]["order_id"] == {"type": "integer"}
    assert spec.parameters["additionalProperties"] is False


@pytest.mark.parametrize(
    ("function", "arguments", "content", "is_error"),
    [
        (
            refund,
            '{"order_id": 7, "amount": 2.5}',
            '{"order": 7, "amount": 2.5, "note": null}',
            False,
        ),
        (refund, '{"order_id": "7"}', '{"order": 7, "amount": 0.0, "note": null}', False),
        (slow_lookup, '{"order_id": 3}', "order 3 shipped", False),
        (refund, "{oops", "Error: arguments are not valid JSON (Expecting property name", True),
        (refund, "[1, 2]", "Error: arguments must be a JSON object.", True),
        (refund, '{"order_id": "seven"}', "Error: invalid arguments for refund: order_id: ", True),
        (refund, "{}", "Error: invalid arguments for refund: order_id: Field required.", True),
        (refund, '{"order_id": 1, "x": 1}', "x: Extra inputs are not permitted", True),
        (broken, '{"order_id": 1}', "Error: broken failed: RuntimeError: database offline", True),
    ],
)
async def test_invoke(function: object, arguments: str, content: str, is_error: bool) -> None:
    output = await function_tool(function).invoke(arguments)  # type: ignore[arg-type]
    assert content in output.content
    assert output.is_error is is_error


def test_variadic_functions_are_refused() -> None:
    def anything(*args: int) -> None:
        """Nope."""

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs cannot be offered to a model"):
        function_tool(anything)


async def test_a_failing_tool_does_not_crash_the_turn() -> None:
    clerk = Agent("Clerk", "Help.", tools=(broken,))
    workflow = HandoffBuilder(participants=[clerk]).with_start_agent(clerk).build()
    model = ScriptedModel([call("broken", {"order_id": 1}), say("Sorry, the system is down.")])
    events, _ = await run_turn(workflow, model, "status?")
    result = next(e for e in events if isinstance(e, ToolCalled))
    assert result.outcome.is_error
    assert [t.name for t in model.requests[0].tools] == ["broken"]
    tool_message = model.requests[1].messages[-1]
    assert tool_message.role == "tool" and "database offline" in (tool_message.content or "")


async def test_a_call_that_overruns_its_timeout_is_an_error_result() -> None:
    release = threading.Event()

    def stuck(order_id: int) -> str:
        """Never answers in time (a blocking client with no timeout of its own)."""
        release.wait(5)
        return "late"

    try:
        output = await function_tool(stuck, timeout=0.1).invoke('{"order_id": 1}')
    finally:
        release.set()
    assert output.is_error and output.content == "Error: stuck did not finish within 0.1 seconds."


async def test_a_number_too_long_to_read_is_an_error_result_not_a_crash() -> None:
    def add(a: int) -> int:
        """Add."""
        return a

    output = await function_tool(add).invoke('{"a": 1' + "9" * 5000 + "}")
    assert output.is_error and "not valid JSON (a number is too long)" in output.content
