"""Review cards in the Discord moderators' channel: how a card looks, and what a click means."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.service import CaseCard, Click

NO_MENTIONS = discord.AllowedMentions.none()
_CLICK = re.compile(r"^switchboard:case:([a-z]+):(\S{1,20})$")
_BUTTONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "approve": ("Approve", discord.ButtonStyle.success),
    "reject": ("Reject", discord.ButtonStyle.danger),
    "takeover": ("Take over", discord.ButtonStyle.secondary),
    "handback": ("Hand back", discord.ButtonStyle.secondary),
    "close": ("Close", discord.ButtonStyle.secondary),
}


def card_embed(card: CaseCard) -> discord.Embed:
    """The card: title, reason, link to the thread, last action, and an excerpt."""
    case = card.case
    lines = [f"Reason: {case.reason}" if case.reason else "No reason given."]
    if case.key.channel != "dm":
        lines.append(
            f"[Open the conversation](https://discord.com/channels/{case.key.channel}/"
            f"{case.key.thread})"
        )
    if case.moderator:
        lines.append(f"Last action by <@{case.moderator}>")
    embed = discord.Embed(title=card.title, description="\n".join(lines))
    if card.excerpt:
        embed.add_field(name="Conversation", value="\n".join(card.excerpt)[:1024], inline=False)
    return embed


def card_view(card: CaseCard) -> discord.ui.View:
    """The buttons still useful for the case."""
    view = discord.ui.View(timeout=None)
    for action in card.actions:
        label, style = _BUTTONS[action]
        view.add_item(
            discord.ui.Button(
                label=label, style=style, custom_id=f"switchboard:case:{action}:{card.case.id}"
            )
        )
    return view


def to_click(interaction: discord.Interaction) -> Click | None:
    """A button on one of our cards as a `Click`; None for any other interaction."""
    if interaction.type is not discord.InteractionType.component or interaction.data is None:
        return None
    data: dict[str, Any] = dict(interaction.data)
    match = _CLICK.match(str(data.get("custom_id", "")))
    if match is None:
        return None
    once = f"click:{interaction.id}"
    return Click(match.group(2), match.group(1), str(interaction.user.id), interaction, id=once)


def is_moderator(interaction: discord.Interaction, role: str | None) -> bool:
    """Holds the moderator role (by id or name), or may manage threads here."""
    if interaction.permissions.manage_threads:
        return True
    roles = getattr(interaction.user, "roles", [])
    return role is not None and any(role in (str(r.id), r.name) for r in roles)
