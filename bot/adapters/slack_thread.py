"""Posting into one Slack thread under agent personas, with a placeholder while a turn runs."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.text import escape_slack, split_text
from bot.engine.agents import Persona
from bot.service import Post

log = logging.getLogger(__name__)

POST_LIMIT = 3900
DM_THREAD = "dm"
WORKING_TEXT = "_working on it…_"


class SlackThread:
    """Posts into one thread under agent personas, with a placeholder while a turn runs."""

    def __init__(self, client: AsyncWebClient, channel: str, thread: str):
        self.client = client
        self.channel = channel
        self.thread_ts = None if thread == DM_THREAD else thread
        self._placeholder: tuple[str, Persona] | None = None

    async def working(self, persona: Persona) -> str | None:
        """Show that the bot is on it: a placeholder the first reply replaces; returns its ts."""
        try:
            response = await self._send(WORKING_TEXT, persona)
        except (SlackApiError, aiohttp.ClientError) as exc:
            log.warning("no placeholder in %s: %s", self.channel, type(exc).__name__)
            return None  # a nicety only: the turn goes on, its posts go through the outbox
        self._placeholder = (str(response["ts"]), persona)
        return self._placeholder[0]

    async def post(self, post: Post) -> None:
        """Post one reply, handoff line or notice, split to fit and escaped."""
        text = escape_slack(post.text)
        if post.kind == "notice":
            text = f"_{text}_"
        chunks = split_text(text, POST_LIMIT) or ["…"]
        if self._placeholder is None and post.replaces:
            await self._delete(post.replaces)  # left behind by a turn that crashed
        if self._placeholder is not None:
            ts, persona = self._placeholder
            self._placeholder = None
            if persona == post.persona and post.kind == "reply":
                await self.client.chat_update(channel=self.channel, ts=ts, text=chunks[0])
                chunks = chunks[1:]
            else:
                await self._delete(ts)
        for chunk in chunks:
            if post.kind == "handoff":
                blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": chunk}]}]
                await self._send(chunk, post.persona, blocks=blocks)
            else:
                await self._send(chunk, post.persona)

    async def finish(self) -> None:
        """Remove a placeholder nothing replaced (the turn posted nothing)."""
        if self._placeholder is not None:
            ts, _ = self._placeholder
            self._placeholder = None
            await self._delete(ts)

    async def _send(self, text: str, persona: Persona, **extra: Any) -> Any:
        identity: dict[str, Any] = {"username": persona.name}
        if persona.emoji:
            identity["icon_emoji"] = persona.emoji
        elif persona.avatar_url:
            identity["icon_url"] = persona.avatar_url
        return await self.client.chat_postMessage(
            channel=self.channel,
            thread_ts=self.thread_ts,
            text=text,
            unfurl_links=False,
            **identity,
            **extra,
        )

    async def _delete(self, ts: str) -> None:
        try:
            await self.client.chat_delete(channel=self.channel, ts=ts)
        except SlackApiError as exc:
            log.warning("could not remove a placeholder in %s: %s", self.channel, exc)
