"""Review cards in the Discord moderators' channel, and the clicks on their buttons.

Rights are checked on the server for every click: the clicker must hold DISCORD_MODERATOR_ROLE
(by id or name) or Manage Threads. Anyone else gets an ephemeral refusal and nothing changes.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.service import CaseCard, Moderation
from bot.service.moderation import Action
from bot.store.base import Case

if TYPE_CHECKING:
    from bot.adapters.discord import SwitchboardClient

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
REFUSAL = "Only moderators can act on review cases."
_CLICK = re.compile(r"^switchboard:case:(approve|reject|takeover|handback|close):(\d+)$")
_BUTTONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "approve": ("Approve", discord.ButtonStyle.success),
    "reject": ("Reject", discord.ButtonStyle.danger),
    "takeover": ("Take over", discord.ButtonStyle.secondary),
    "handback": ("Hand back", discord.ButtonStyle.secondary),
    "close": ("Close", discord.ButtonStyle.secondary),
}


def card_embed(card: CaseCard, link: str | None) -> discord.Embed:
    """The card: title, reason, link to the thread, last action, and an excerpt."""
    case = card.case
    lines = [f"Reason: {case.reason}" if case.reason else "No reason given."]
    if link:
        lines.append(f"[Open the conversation]({link})")
    if case.moderator:
        lines.append(f"Last action by <@{case.moderator}>")
    embed = discord.Embed(title=card.title, description="\n".join(lines))
    if card.excerpt:
        embed.add_field(name="Conversation", value="\n".join(card.excerpt)[:1024], inline=False)
    return embed


def card_view(case: Case, taken_over: bool) -> discord.ui.View:
    """The buttons still useful for the case (none once it is closed)."""
    view = discord.ui.View(timeout=None)
    if case.status != "closed":
        actions = ["approve", "reject"] if case.status == "open" else []
        actions += ["handback" if taken_over else "takeover", "close"]
        for action in actions:
            label, style = _BUTTONS[action]
            view.add_item(
                discord.ui.Button(
                    label=label, style=style, custom_id=f"switchboard:case:{action}:{case.id}"
                )
            )
    return view


class DiscordCards:
    """Posts cards for new cases and applies moderators' clicks."""

    def __init__(
        self,
        client: SwitchboardClient,
        moderation: Moderation,
        channel_id: int | None,
        role: str | None,
    ) -> None:
        self.client = client
        self.moderation = moderation
        self.channel_id = channel_id
        self.role = role

    async def post(self, case: Case) -> None:
        """Post the card of a newly opened case in the moderators' channel."""
        if self.channel_id is None:
            log.warning("case #%d opened, but no DISCORD_MODERATOR_CHANNEL to post it in", case.id)
            return
        channel = self.client.get_channel(self.channel_id) or await self.client.fetch_channel(
            self.channel_id
        )
        card = await self.moderation.card(case)
        message = await cast(discord.TextChannel, channel).send(
            embed=card_embed(card, _link(case)),
            view=card_view(case, taken_over=False),
            allowed_mentions=NO_MENTIONS,
        )
        reference = json.dumps({"channel": self.channel_id, "message": message.id})
        await self.moderation.store.set_case_card(case.id, reference)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button on a card: check rights, act, update the card, announce in the thread."""
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        match = _CLICK.match(str(cast(dict[str, Any], interaction.data).get("custom_id", "")))
        if match is None:
            return
        action, case_id = cast(Action, match.group(1)), int(match.group(2))
        clicker = str(interaction.user.id)
        if not self.is_moderator(interaction):
            log.warning("refused %s on case %d by non-moderator %s", action, case_id, clicker)
            await interaction.response.send_message(REFUSAL, ephemeral=True)
            return
        result = await self.moderation.act(case_id, action, clicker)
        if not result.ok or result.case is None:
            await interaction.response.send_message(result.message, ephemeral=True)
            return
        case = result.case
        session = await self.moderation.store.get_session(case.session_id)
        taken_over = session is not None and session.taken_over_by is not None
        card = await self.moderation.card(case)
        await interaction.response.edit_message(
            embed=card_embed(card, _link(case)), view=card_view(case, taken_over)
        )
        poster = await self.client.poster_for(case.key.channel, case.key.thread)
        for post in result.posts:
            await poster.post(post)

    def is_moderator(self, interaction: discord.Interaction) -> bool:
        """Holds the moderator role (by id or name), or may manage threads here."""
        if interaction.permissions.manage_threads:
            return True
        roles = getattr(interaction.user, "roles", [])
        return self.role is not None and any(
            self.role in (str(role.id), role.name) for role in roles
        )


def _link(case: Case) -> str | None:
    if case.key.channel == "dm":
        return None
    return f"https://discord.com/channels/{case.key.channel}/{case.key.thread}"
