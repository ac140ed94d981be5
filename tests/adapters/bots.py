"""The bot running in-process against the local Slack or Discord, for adapter tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.adapters.discord import DiscordConfig, SwitchboardClient
from bot.adapters.slack import SlackConfig, build_app, slack_platform
from bot.engine.loader import load_workflow, parse_workflow
from bot.engine.workflow import Workflow
from bot.service import ConversationService
from bot.store import Store
from bot.testing import ScriptedModel, call, say
from tests.fakes.discord_api import TOKEN, DiscordServer
from tests.fakes.slack_api import SlackServer

SHOP = load_workflow(Path(__file__).parents[2] / "workflows" / "ecommerce.yaml")
# Returns may refund: above 100, only once a moderator approves (tests.scenario.test_approvals).
APPROVALS = parse_workflow(
    """
start: Returns
agents:
  - name: Returns
    instructions: You handle refunds.
    tools:
      - {function: tests.scenario.test_approvals.refund, approval: moderators,
         when: tests.scenario.test_approvals.large}
"""
)


def asks_approval(*after: str) -> ScriptedModel:
    """Returns asks to refund 150 on order 1042, says it waits, then says `after`."""
    return ScriptedModel(
        [
            call("refund", {"order_id": "1042", "amount": 150}),
            say("A team member must approve this refund."),
            *(say(text) for text in after),
        ]
    )


class SlackBot:
    """Bolt app + Socket Mode handler + service on a real SQLite file."""

    def __init__(
        self,
        slack: SlackServer,
        store: Store,
        model: ScriptedModel,
        workflow: Workflow = SHOP,
        **config: Any,
    ) -> None:
        self.config = SlackConfig("xoxb-test", "xapp-test", None, slack.api_url, 0, **config)
        self.platform = slack_platform(self.config)
        self.service = ConversationService(workflow, model, store, self.platform)
        self.app = build_app(self.service, self.platform, self.config)
        self.handler = AsyncSocketModeHandler(self.app, "xapp-test")

    async def __aenter__(self) -> SlackBot:
        await self.handler.connect_async()  # type: ignore[no-untyped-call]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.handler.close_async()  # type: ignore[no-untyped-call]


class DiscordBot:
    """The discord.py client logged in to the local Discord, with the service behind it."""

    def __init__(
        self,
        server: DiscordServer,
        store: Store,
        model: ScriptedModel,
        *,
        moderator_channel: int | None = None,
        moderator_role: str | None = None,
        workflow: Workflow = SHOP,
    ) -> None:
        config = DiscordConfig(
            TOKEN,
            server.api_url,
            server.gateway_url,
            moderator_channel=moderator_channel,
            moderator_role=moderator_role,
        )
        self.client = SwitchboardClient(config, guild_ready_timeout=0.05)
        self.client.attach(ConversationService(workflow, model, store, self.client))

    async def __aenter__(self) -> DiscordBot:
        await self.client.__aenter__()
        self._task = asyncio.create_task(self.client.start(TOKEN))
        await asyncio.wait_for(self.client.wait_until_ready(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await asyncio.wait_for(self._task, 10)
