"""Sequential workflows through the service and a real SQLite file: the steps run in order on each
message and only the last one's reply is shown; a review pause after a step is a case; approve
goes on to the next step (which reads the reviewer's note), reject has the step done again; the
pause survives a restart and a crash mid-pipeline resumes without asking a stored step again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.engine import Agent, SequentialBuilder
from bot.engine.errors import WorkflowError
from bot.engine.graph import mermaid
from bot.engine.loader import load_workflow, parse_workflow
from bot.engine.transcript import AgentReply
from bot.service import ConversationService, IncomingMessage
from bot.service.platform import Click
from bot.store import Store, sqlite_store
from bot.testing import RecordingPlatform, ScriptedModel, say

PIPELINE = load_workflow(Path(__file__).parents[2] / "workflows" / "content_pipeline.yaml")
PLAIN = parse_workflow(
    """
kind: sequential
agents:
  - {name: Researcher, instructions: Research.}
  - {name: Writer, instructions: Write.}
  - {name: Editor, instructions: Edit.}
"""
)


def msg(text: str) -> IncomingMessage:
    return IncomingMessage("test", "C1", "t1", text, author="ana")


def by_agent(model: ScriptedModel) -> list[str]:
    return [request.agent for request in model.requests]


async def test_the_steps_run_in_order_and_only_the_last_reply_is_shown(store: Store) -> None:
    model = ScriptedModel(
        respond=lambda request: say(f"{request.agent} output for: {request.messages[-1].content}")
    )
    platform = RecordingPlatform()
    service = ConversationService(PLAIN, model, store, platform)
    result = await service.handle(msg("a piece on tides"))
    assert by_agent(model) == ["Researcher", "Writer", "Editor"]
    assert platform.texts() == ["Editor output for: a piece on tides"]
    assert [p.text for p in result.posts] == platform.texts()
    writer = model.requests[1]
    assert "Researcher wrote, for the next step: Researcher output" in (
        writer.messages[0].content or ""
    )
    assert "Write your step's result for Editor" in (writer.messages[0].content or "")
    await service.handle(msg("now shorter"))
    assert by_agent(model)[3:] == ["Researcher", "Writer", "Editor"]


async def test_a_review_pause_is_a_case_approve_goes_on_with_the_note(store: Store) -> None:
    model = ScriptedModel([say("notes"), say("draft one"), say("final text")])
    platform = RecordingPlatform(moderators=("mod-1",))
    service = ConversationService(PIPELINE, model, store, platform)
    result = await service.handle(msg("a piece on tides"))
    (case,) = result.cases
    assert (case.kind, case.agent, case.status) == ("pause", "Writer", "open")
    assert by_agent(model) == ["Researcher", "Writer"]
    assert platform.texts() == ["Your request is with a reviewer; I'll come back to you here."]
    card = await service.moderation.card(case)
    assert card.title == f"Case #{case.id}: review of Writer's step (open)"
    assert "Writer: draft one" in card.excerpt and card.actions == ("approve", "reject")

    await service.handle(msg("any news?"))  # the pipeline waits for the verdict
    assert by_agent(model) == ["Researcher", "Writer"]
    assert platform.texts()[-1].startswith("Your request is still with a reviewer")

    done = await service.click(Click(str(case.id), "approve", "mod-1", note="Keep it short."))
    assert done.ok
    assert by_agent(model) == ["Researcher", "Writer", "Editor"]
    editor = [m.content or "" for m in model.requests[-1].messages]
    assert any("Keep it short." in text for text in editor)
    assert any("A reviewer approved Writer's step" in text for text in editor)
    assert platform.texts()[-2:] == ["A moderator approved this request.", "final text"]
    again = await service.click(Click(str(case.id), "reject", "mod-1"))
    assert not again.ok


async def test_reject_has_the_step_done_again_then_it_pauses_again(store: Store) -> None:
    model = ScriptedModel([say("notes"), say("draft one"), say("draft two"), say("final")])
    platform = RecordingPlatform(moderators=("mod-1",))
    service = ConversationService(PIPELINE, model, store, platform)
    (first,) = (await service.handle(msg("tides"))).cases
    assert (await service.click(Click(str(first.id), "reject", "mod-1", note="Cite a source"))).ok
    assert by_agent(model) == ["Researcher", "Writer", "Writer"]
    writer = [m.content or "" for m in model.requests[-1].messages]
    assert any("Cite a source" in text for text in writer)
    assert any("A reviewer rejected your step" in text for text in writer)
    cases = await store.cases(status="open")
    assert [(c.kind, c.agent) for c in cases] == [("pause", "Writer")]
    assert (await service.click(Click(str(cases[0].id), "approve", "mod-1"))).ok
    assert by_agent(model)[-1] == "Editor" and platform.texts()[-1] == "final"


async def test_a_pause_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "pipeline.db"
    async with sqlite_store(db) as store:
        service = ConversationService(PIPELINE, ScriptedModel([say("n"), say("d")]), store)
        (case,) = (await service.handle(msg("tides"))).cases
        await service.stop(1)
    platform = RecordingPlatform(moderators=("mod-1",))
    model = ScriptedModel([say("final after restart")])
    async with sqlite_store(db) as store:
        service = ConversationService(PIPELINE, model, store, platform)
        assert (await service.click(Click(str(case.id), "approve", "mod-1"))).ok
    assert by_agent(model) == ["Editor"] and platform.texts()[-1] == "final after restart"


async def test_a_crash_mid_pipeline_never_asks_a_stored_step_again(tmp_path: Path) -> None:
    db = tmp_path / "pipeline.db"
    hold = asyncio.Event()

    async def slow_editor(request: object) -> object:
        await hold.wait()
        return say("never")

    started = asyncio.Event()

    def respond(request: object) -> object:
        agent = getattr(request, "agent", "")
        if agent == "Editor":
            started.set()
            return slow_editor(request)
        return say(f"{agent} done")

    async with sqlite_store(db) as store:
        model = ScriptedModel(respond=respond)
        service = ConversationService(PLAIN, model, store, RecordingPlatform())
        turn = asyncio.create_task(service.handle(msg("tides")))
        await asyncio.wait_for(started.wait(), 5)
        turn.cancel()  # the process dies while the Editor writes
        await asyncio.gather(turn, return_exceptions=True)
        await service.stop(0.1)
    platform = RecordingPlatform()
    model = ScriptedModel([say("final")])
    async with sqlite_store(db) as store:
        service = ConversationService(PLAIN, model, store, platform)
        await service.sweep()
        for _ in range(200):
            if platform.texts():
                break
            await asyncio.sleep(0.02)
        await service.stop(1)
        (session,) = await store.list_sessions()
        items = [e.item for e in await store.entries(session.id)]
    assert by_agent(model) == ["Editor"] and platform.texts() == ["final"]
    replies = [i.agent for i in items if isinstance(i, AgentReply)]
    assert replies == ["Researcher", "Writer", "Editor"]


def test_the_builder_and_the_file_say_what_is_wrong() -> None:
    agents = [Agent("A", "a"), Agent("B", "b")]
    built = SequentialBuilder(agents).with_review_after("A").build()
    assert built.order == ("A", "B") and built.review_after == {"A"}
    with pytest.raises(WorkflowError, match="'B' is the last step"):
        SequentialBuilder(agents).with_review_after("B").build()
    with pytest.raises(WorkflowError, match="unknown agent 'C'"):
        SequentialBuilder(agents).with_review_after("C").build()
    with pytest.raises(WorkflowError, match="handoffs: has no meaning in a sequential workflow"):
        parse_workflow(
            "kind: sequential\nagents: [{name: A, instructions: a}, {name: B, instructions: b}]\n"
            "handoffs: [{from: A, to: B}]\n"
        )
    with pytest.raises(WorkflowError, match="review_after: pauses only a sequential workflow"):
        parse_workflow("start: A\nreview_after: [A]\nagents: [{name: A, instructions: a}]\n")


def test_graph_draws_the_steps_and_the_pause() -> None:
    drawn = mermaid(PIPELINE)
    assert "a0_Researcher --> a1_Writer" in drawn
    assert 'a1_Writer_review{{"review: a person approves"}}' in drawn
    assert "a1_Writer --> a1_Writer_review -->|approved| a2_Editor" in drawn
