"""Review cards in the Slack moderators' channel, and the clicks on their buttons.

Rights are checked on the server for every click: the clicker must be listed in
SLACK_MODERATOR_IDS or be a member of the moderators' channel. Anyone else gets an ephemeral
refusal and nothing changes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack_thread import SlackThread
from bot.adapters.text import escape_slack
from bot.service import CaseCard, Moderation
from bot.service.moderation import Action
from bot.store.base import Case

if TYPE_CHECKING:
    from bot.adapters.slack import SlackConfig

log = logging.getLogger(__name__)

MEMBERS_TTL_S = 60.0
REFUSAL = "Only moderators can act on review cases."
_BUTTONS: dict[str, tuple[str, str | None]] = {
    "approve": ("Approve", "primary"),
    "reject": ("Reject", "danger"),
    "takeover": ("Take over", None),
    "handback": ("Hand back", None),
    "close": ("Close", None),
}


def card_blocks(card: CaseCard, link: str | None, taken_over: bool) -> list[dict[str, Any]]:
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
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}
    ]
    if card.excerpt:
        excerpt = "\n".join(f"> {escape_slack(line)}" for line in card.excerpt)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": excerpt}]})
    actions = _available(case, taken_over)
    if actions:
        buttons = []
        for action in actions:
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
        blocks.append({"type": "actions", "block_id": f"case-{case.id}", "elements": buttons})
    return blocks


def _available(case: Case, taken_over: bool) -> list[str]:
    if case.status == "closed":
        return []
    actions = ["approve", "reject"] if case.status == "open" else []
    actions.append("handback" if taken_over else "takeover")
    actions.append("close")
    return actions


class SlackCards:
    """Posts cards for new cases and applies moderators' clicks."""

    def __init__(self, client: AsyncWebClient, moderation: Moderation, config: SlackConfig):
        self.client = client
        self.moderation = moderation
        self.channel = config.moderator_channel
        self.moderator_ids = config.moderator_ids
        self._members: tuple[float, frozenset[str]] = (0.0, frozenset())

    async def post(self, case: Case) -> None:
        """Post the card of a newly opened case in the moderators' channel."""
        if self.channel is None:
            log.warning("case #%d opened, but no SLACK_MODERATOR_CHANNEL to post it in", case.id)
            return
        card = await self.moderation.card(case)
        blocks = card_blocks(card, await self._link(case), taken_over=False)
        response = await self.client.chat_postMessage(
            channel=self.channel, text=card.title, blocks=blocks, unfurl_links=False
        )
        reference = json.dumps({"channel": self.channel, "ts": response["ts"]})
        await self.moderation.store.set_case_card(case.id, reference)

    async def on_click(self, ack: Any, body: dict[str, Any]) -> None:
        """A button on a card: ack at once, check rights, act, update the card, announce."""
        await ack()
        clicker = body["user"]["id"]
        channel = body["channel"]["id"]
        click = body["actions"][0]
        action = cast(Action, click["action_id"].removeprefix("case_"))
        if not await self.is_moderator(clicker):
            log.warning(
                "refused %s on case %s by non-moderator %s", action, click["value"], clicker
            )
            await self._tell(channel, clicker, REFUSAL)
            return
        result = await self.moderation.act(int(click["value"]), action, clicker)
        if not result.ok or result.case is None:
            await self._tell(channel, clicker, result.message)
            return
        await self.refresh(result.case, channel, body["message"]["ts"])
        thread = SlackThread(self.client, result.case.key.channel, result.case.key.thread)
        for post in result.posts:
            await thread.post(post)

    async def refresh(self, case: Case, channel: str, ts: str) -> None:
        """Show the case's outcome on its card, with only the buttons still useful."""
        session = await self.moderation.store.get_session(case.session_id)
        taken_over = session is not None and session.taken_over_by is not None
        card = await self.moderation.card(case)
        blocks = card_blocks(card, await self._link(case), taken_over)
        await self.client.chat_update(channel=channel, ts=ts, text=card.title, blocks=blocks)

    async def is_moderator(self, user: str) -> bool:
        """Listed in SLACK_MODERATOR_IDS, or a member of the moderators' channel."""
        if user in self.moderator_ids:
            return True
        if self.channel is None:
            return False
        fetched, members = self._members
        if time.monotonic() - fetched > MEMBERS_TTL_S:
            members = await self._channel_members()
            self._members = (time.monotonic(), members)
        return user in members

    async def _channel_members(self) -> frozenset[str]:
        members: set[str] = set()
        cursor = None
        while True:
            response = await self.client.conversations_members(
                channel=self.channel or "", cursor=cursor, limit=200
            )
            members.update(response.get("members", []))
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return frozenset(members)

    async def _link(self, case: Case) -> str | None:
        try:
            response = await self.client.chat_getPermalink(
                channel=case.key.channel, message_ts=case.key.thread
            )
        except SlackApiError:
            return None
        return str(response.get("permalink")) or None

    async def _tell(self, channel: str, user: str, text: str) -> None:
        await self.client.chat_postEphemeral(channel=channel, user=user, text=escape_slack(text))
