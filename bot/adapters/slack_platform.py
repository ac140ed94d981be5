"""Slack as a `Platform`: posts under personas, placeholders, review cards, moderators' rights.

Rights are checked for every click: the clicker must be listed in SLACK_MODERATOR_IDS or be a
member of the moderators' channel (read once a minute).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.text import escape_slack, split_text
from bot.engine.agents import Persona
from bot.service import CaseCard, Click, Post, Refused
from bot.store.values import SessionKey

log = logging.getLogger(__name__)

PLATFORM = "slack"
POST_LIMIT = 3900
BLOCK_TEXT_LIMIT = 3000  # a section's or a context element's text
_PASSING = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
DM_THREAD = "dm"
WORKING_TEXT = "_working on it…_"
MEMBERS_TTL_S = 60.0
_BUTTONS: dict[str, tuple[str, str | None]] = {
    "approve": ("Approve", "primary"),
    "reject": ("Reject", "danger"),
    "takeover": ("Take over", None),
    "handback": ("Hand back", None),
    "close": ("Close", None),
}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Slack's refusals for good become `Refused`; a 429, a 5xx or a passing error stays as it
    is, to be tried again."""
    try:
        yield
    except SlackApiError as exc:
        status = exc.response.status_code
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        if status == 429 or status >= 500 or error in _PASSING:
            raise
        raise Refused(f"Slack refused it ({error or f'HTTP {status}'})") from exc


def _tagged(tag: str, part: int) -> dict[str, Any]:
    """Message metadata naming the outbox post and part a message is (invisible to people)."""
    return {"event_type": "switchboard_post", "event_payload": {"post": tag, "part": part}}


def card_blocks(card: CaseCard, link: str | None) -> list[dict[str, Any]]:
    """The card: title, reason, link to the thread, an excerpt, and the buttons still useful."""
    case = card.case
    lines = [f"*{escape_slack(card.title)}*"]
    if case.reason:
        lines.append(f"Reason: {escape_slack(case.reason)}")
    if case.moderator:
        lines.append(f"Last action by <@{case.moderator}>")
    if link:
        lines.append(f"<{link}|Open the conversation>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _mrkdwn("\n".join(lines)[:BLOCK_TEXT_LIMIT])}
    ]
    if card.excerpt:
        excerpt = "\n".join(f"> {escape_slack(line)}" for line in card.excerpt)
        blocks.append({"type": "context", "elements": [_mrkdwn(excerpt[:BLOCK_TEXT_LIMIT])]})
    buttons = []
    for action in card.actions:
        label, style = _BUTTONS[action]
        button: dict[str, Any] = {
            "type": "button",
            "action_id": f"case_{action}",
            "text": {"type": "plain_text", "text": label},
            "value": str(case.id),
        }
        if style:
            button["style"] = style
        buttons.append(button)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"case-{case.id}", "elements": buttons})
    return blocks


class SlackPlatform:
    """Posts into Slack threads under agent personas, and cards into the moderators' channel."""

    name = PLATFORM
    placeholders = True
    # Replies being written are shown by `chat.update`, a Tier 3 method (50+ calls a minute for
    # the workspace): 40 a minute leaves room for the final posts.
    stream_rate: float | None = 40 / 60
    stream_interval: float | None = None
    redelivers = True  # unacknowledged events come again when a process connects

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        moderator_channel: str | None = None,
        moderator_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.client = client
        self.moderator_channel = moderator_channel
        self.moderator_ids = moderator_ids
        self.cards_setting = None if moderator_channel else "SLACK_MODERATOR_CHANNEL"
        self._members: tuple[float, frozenset[str]] = (0.0, frozenset())

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        """Post one reply, handoff line, notice or placeholder, split to fit and escaped.

        Every part carries the post's `tag` and its index in the message metadata, which
        `find` reads back after a crash. `plain`: one part of plain text, no blocks.
        """
        chunks = self._chunks(post, plain)
        first: str | None = None
        replaced = post.replaces is not None and start == 0  # in place: its persona is kept
        if replaced and await self._update(key, post.replaces or "", chunks[0], _tagged(tag, 0)):
            first, start = post.replaces, 1
        for index in range(start, len(chunks)):
            extra: dict[str, Any] = {"metadata": _tagged(tag, index)}
            if post.kind == "handoff" and not plain:
                line = chunks[index][:BLOCK_TEXT_LIMIT]
                extra["blocks"] = [{"type": "context", "elements": [_mrkdwn(line)]}]
            with _refusals():
                response = await self._send(key, chunks[index], post.persona, **extra)
            first = first or str(response["ts"])
        return first

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        """The post's parts already in the thread, by the tag in their metadata."""
        window: dict[str, Any] = {"channel": key.channel, "include_all_metadata": True}
        if after:
            window |= {"oldest": after, "inclusive": True}
        if key.thread == DM_THREAD:
            response = await self.client.conversations_history(limit=200, **window)
        else:
            response = await self.client.conversations_replies(ts=key.thread, limit=200, **window)
        parts: dict[int, str] = {}
        for message in response.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("post") == tag:
                parts[int(payload.get("part", 0))] = str(message["ts"])
        count = 0
        while count in parts:
            count += 1
        return (parts.get(0), count)

    def _chunks(self, post: Post, plain: bool) -> list[str]:
        if post.kind == "working":
            return [WORKING_TEXT]
        text = escape_slack(post.text)
        if plain:
            return [text[:POST_LIMIT] or "…"]
        if post.kind == "notice":
            text = f"_{text}_"
        return split_text(text, POST_LIMIT) or ["…"]

    async def remove(self, key: SessionKey, ref: str) -> None:
        """Delete a placeholder. A passing failure is raised, to be tried again; a refusal for
        good (already deleted, not ours to delete) is only logged."""
        try:
            with _refusals():
                await self.client.chat_delete(channel=key.channel, ts=ref)
        except Refused as exc:
            log.warning("could not remove a placeholder in %s: %s", key.channel, exc)

    async def show(self, key: SessionKey, ref: str | None, text: str, persona: Persona) -> None:
        """A reply being written, in its placeholder (posted under the same persona, which an
        update keeps): its first part, escaped like every post."""
        if ref is not None:
            first = self._chunks(Post("reply", text, persona), plain=False)[0]
            await self.client.chat_update(channel=key.channel, ts=ref, text=first)

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        yield  # the placeholder post says so

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        """Post the case's card in the moderators' channel, or update it in place."""
        channel = self.moderator_channel
        if channel is None:
            log.warning("case #%d: no SLACK_MODERATOR_CHANNEL to post its card in", card.case.id)
            return None
        blocks = card_blocks(card, await self._link(card.case.key))
        title = card.title[:BLOCK_TEXT_LIMIT]
        with _refusals():
            if ref is not None:
                where = json.loads(ref)
                await self.client.chat_update(
                    channel=where["channel"], ts=where["ts"], text=title, blocks=blocks
                )
                return ref
            response = await self.client.chat_postMessage(
                channel=channel,
                text=title,
                blocks=blocks,
                unfurl_links=False,
                metadata=_tagged(tag, 0),
            )
        return json.dumps({"channel": channel, "ts": response["ts"]})

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        """The card posted with `tag`, read back from the moderators' channel."""
        channel = self.moderator_channel
        if channel is None:
            return None
        response = await self.client.conversations_history(
            channel=channel, include_all_metadata=True, limit=200
        )
        for message in response.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if payload.get("post") == tag:
                return json.dumps({"channel": channel, "ts": message["ts"]})
        return None

    async def is_moderator(self, click: Click) -> bool:
        """Listed in SLACK_MODERATOR_IDS, or a member of the moderators' channel."""
        if click.actor in self.moderator_ids:
            return True
        if self.moderator_channel is None:
            return False
        fetched, members = self._members
        if time.monotonic() - fetched > MEMBERS_TTL_S:
            members = await self._channel_members(self.moderator_channel)
            self._members = (time.monotonic(), members)
        return click.actor in members

    async def tell(self, click: Click, text: str) -> None:
        channel = (click.context or {}).get("channel", {}).get("id") or self.moderator_channel
        if channel:
            await self.client.chat_postEphemeral(
                channel=channel, user=click.actor, text=escape_slack(text)
            )

    async def _send(self, key: SessionKey, text: str, persona: Persona, **extra: Any) -> Any:
        identity: dict[str, Any] = {"username": persona.name}
        if persona.emoji:
            identity["icon_emoji"] = persona.emoji
        elif persona.avatar_url:
            identity["icon_url"] = persona.avatar_url
        return await self.client.chat_postMessage(
            channel=key.channel,
            thread_ts=None if key.thread == DM_THREAD else key.thread,
            text=text,
            unfurl_links=False,
            **identity,
            **extra,
        )

    async def _update(self, key: SessionKey, ts: str, text: str, metadata: dict[str, Any]) -> bool:
        """Replace a placeholder's text; False when it is gone (then post anew)."""
        try:
            await self.client.chat_update(channel=key.channel, ts=ts, text=text, metadata=metadata)
        except SlackApiError as exc:
            log.warning("could not update a placeholder in %s: %s", key.channel, exc)
            return False
        return True

    async def _channel_members(self, channel: str) -> frozenset[str]:
        members: set[str] = set()
        cursor = None
        while True:
            response = await self.client.conversations_members(
                channel=channel, cursor=cursor, limit=200
            )
            members.update(response.get("members", []))
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return frozenset(members)

    async def _link(self, key: SessionKey) -> str | None:
        try:
            response = await self.client.chat_getPermalink(
                channel=key.channel, message_ts=key.thread
            )
        except SlackApiError:
            return None
        return str(response.get("permalink")) or None
