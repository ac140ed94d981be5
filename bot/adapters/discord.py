"""The Discord adapter: gateway messages in, webhook posts under the agent's persona out.

A mention in a text channel opens a public thread on that message and the conversation lives
there; later messages in a thread the store knows continue it without a mention. Replies go
through one webhook per parent channel, so each agent speaks under its own name and avatar.
Mentions are disabled on the client and on every send: model text can never ping anyone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from dataclasses import dataclass
from typing import Any

import discord
import yarl
from discord.gateway import DiscordWebSocket

from bot.adapters.discord_cards import NO_MENTIONS, DiscordCards
from bot.adapters.text import split_text
from bot.engine.agents import Persona
from bot.runtime import outbox_worker, stop_signal
from bot.service import ConversationService, IncomingMessage, Moderation, Post
from bot.settings import Settings, SettingsError
from bot.store.base import SessionKey, StoreError

log = logging.getLogger(__name__)

PLATFORM = "discord"
POST_LIMIT = 2000
WEBHOOK_NAME = "Switchboard"
END_WORDS = frozenset({"end", "/end", "end conversation", "close"})
_FORBIDDEN_NAME = re.compile(r"discord|clyde", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    """What the Discord adapter needs, checked at start-up."""

    token: str
    api_url: str | None = None
    gateway_url: str | None = None
    moderator_channel: int | None = None
    moderator_role: str | None = None
    outbox_retry: float = 1.0
    shard_id: int | None = None
    shard_count: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, shard_id: int | None = None, shard_count: int | None = None
    ) -> DiscordConfig:
        token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
        if not token:
            raise SettingsError(
                "DISCORD_TOKEN is missing: copy the bot token from the Developer Portal "
                "(your application > Bot > Reset Token)"
            )
        return cls(
            token,
            settings.discord_api_url,
            settings.discord_gateway_url,
            settings.discord_moderator_channel,
            settings.discord_moderator_role,
            settings.bot_outbox_retry_s,
            shard_id,
            shard_count,
        )

    def point_at_endpoints(self) -> None:
        """Send REST and gateway traffic to the configured URLs (local servers, proxies)."""
        if self.api_url:
            discord.http.Route.BASE = self.api_url.rstrip("/")
        if self.gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)


def display_name(persona: Persona) -> str:
    """A webhook username Discord accepts: no "discord", not "everyone"/"here", 1-80 chars."""
    name = _FORBIDDEN_NAME.sub("", persona.name).strip() or "Assistant"
    return "Assistant" if name.lower() in ("everyone", "here") else name[:80]


def strip_mention(text: str, bot_id: int) -> str:
    return re.sub(rf"<@!?{bot_id}>", "", text).strip()


def thread_name(text: str) -> str:
    """A thread named from the message's first words (Discord allows 100 characters)."""
    words = " ".join(text.split())
    return (words[:80].rsplit(" ", 1)[0] if len(words) > 80 else words) or "Support"


class SwitchboardClient(discord.Client):
    """A discord.py client that hands messages to the service and posts its replies."""

    def __init__(
        self,
        service: ConversationService,
        *,
        moderator_channel: int | None = None,
        moderator_role: str | None = None,
        **options: Any,
    ) -> None:
        # The bot uses no voice: skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        self.service = service
        self.accepting = True
        self._webhooks: dict[int, discord.Webhook] = {}
        self.cards = DiscordCards(self, Moderation(service), moderator_channel, moderator_role)

    async def on_ready(self) -> None:
        log.info("discord: connected as %s", self.user)
        print(f"Discord: connected as {self.user}.", flush=True)

    async def on_message(self, message: discord.Message) -> None:
        me = self.user
        if me is None or message.author.bot or message.webhook_id or message.author.id == me.id:
            return
        if not self.accepting:
            return
        mentioned = any(user.id == me.id for user in message.mentions)
        channel = message.channel
        if isinstance(channel, discord.DMChannel):
            key_channel, thread_id, parent_id, mentioned = "dm", channel.id, None, True
        elif isinstance(channel, discord.Thread):
            key_channel, thread_id, parent_id = str(channel.guild.id), channel.id, channel.parent_id
        elif isinstance(channel, discord.TextChannel) and mentioned:
            key_channel, thread_id, parent_id = str(channel.guild.id), message.id, channel.id
        else:
            return
        incoming = IncomingMessage(
            platform=PLATFORM,
            channel=key_channel,
            thread=str(thread_id),
            text=strip_mention(message.content, me.id),
            event_id=str(message.id),
            author=str(message.author.id),
            mentioned=mentioned,
        )
        if isinstance(channel, discord.TextChannel):
            try:
                await message.create_thread(name=thread_name(incoming.text))
            except discord.HTTPException as exc:  # e.g. a replayed message: the thread exists
                log.warning("discord: no new thread on %s: %s", message.id, exc)
        poster = ThreadPoster(self, thread_id, parent_id)
        if incoming.text.lower().strip(" .!") in END_WORDS and await self.service.owns(
            incoming.key
        ):
            for post in (await self.service.end(incoming.key, by=f"user {incoming.author}")).posts:
                await poster.post(post)
            return
        typing: list[asyncio.Task[None]] = []

        async def on_start(persona: Persona) -> None:
            # Only a real turn shows typing: not a duplicate, nor a thread the bot does not own.
            typing.append(asyncio.create_task(self._keep_typing(thread_id)))

        try:
            result = await self.service.handle(incoming, emit=poster.post, on_start=on_start)
        except StoreError as exc:
            log.error("discord: store failed for %s: %s", incoming.key, exc)
            await poster.post(self.service.unavailable())
            return
        finally:
            for task in typing:
                task.cancel()
        for case in result.cases:
            await self.cards.post(case)

    async def _keep_typing(self, thread_id: int) -> None:
        """Show "typing" in the thread until cancelled (discord.py renews it every few seconds)."""
        async with self.get_partial_messageable(thread_id).typing():
            await asyncio.Event().wait()

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Buttons on review cards; every other interaction is not ours."""
        await self.cards.on_interaction(interaction)

    async def poster_for(self, key_channel: str, thread: str) -> ThreadPoster:
        """A poster for a stored conversation's thread (or DM)."""
        if key_channel == "dm":
            return ThreadPoster(self, int(thread), None)
        channel = self.get_channel(int(thread)) or await self.fetch_channel(int(thread))
        parent = getattr(channel, "parent_id", None)
        return ThreadPoster(self, int(thread), parent)

    async def webhook_for(self, channel_id: int) -> discord.Webhook:
        """The channel's Switchboard webhook, found or created once, then reused."""
        if channel_id in self._webhooks:
            return self._webhooks[channel_id]
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        if not isinstance(channel, discord.TextChannel):
            raise SettingsError(f"channel {channel_id} cannot hold webhooks")
        mine = [
            hook
            for hook in await channel.webhooks()
            if hook.name == WEBHOOK_NAME and hook.user is not None and hook.user == self.user
        ]
        hook = mine[0] if mine else await channel.create_webhook(name=WEBHOOK_NAME)
        self._webhooks[channel_id] = hook
        return hook


class ThreadPoster:
    """Posts into one thread (or DM) under agent personas."""

    def __init__(self, client: SwitchboardClient, thread_id: int, parent_id: int | None):
        self.client = client
        self.thread_id = thread_id
        self.parent_id = parent_id

    async def post(self, post: Post) -> None:
        text = post.text
        if post.kind == "handoff":
            text = f"-# ↪ {text}"
        elif post.kind == "notice":
            text = f"*{text}*"
        if self.parent_id is None and post.kind != "handoff":
            text = f"**{display_name(post.persona)}**: {text}"  # a DM has no webhook personas
        for chunk in split_text(text, POST_LIMIT):
            await self._send(chunk, post.persona)

    async def _send(self, text: str, persona: Persona) -> None:
        if self.parent_id is None:
            channel = self.client.get_partial_messageable(self.thread_id)
            await channel.send(text, allowed_mentions=NO_MENTIONS)
            return
        hook = await self.client.webhook_for(self.parent_id)
        await hook.send(
            text,
            username=display_name(persona),
            avatar_url=persona.avatar_url or discord.utils.MISSING,
            thread=discord.Object(id=self.thread_id),
            wait=True,
            allowed_mentions=NO_MENTIONS,
        )


async def serve(service: ConversationService, config: DiscordConfig) -> None:
    """Log in and take gateway events until cancelled; translate start-up failures."""
    config.point_at_endpoints()
    if config.moderator_channel is None and any(a.review for a in service.workflow.agents.values()):
        print(
            "warning: DISCORD_MODERATOR_CHANNEL is not set: escalations still open cases "
            "(`python -m bot cases`), but no card reaches moderators in Discord",
            file=sys.stderr,
            flush=True,
        )
    shards = {}
    if config.shard_count is not None:
        shards = {"shard_id": config.shard_id, "shard_count": config.shard_count}
    client = SwitchboardClient(
        service,
        moderator_channel=config.moderator_channel,
        moderator_role=config.moderator_role,
        **shards,
    )

    async def deliver(key: SessionKey, post: Post) -> None:
        await (await client.poster_for(key.channel, key.thread)).post(post)

    stop = stop_signal()
    try:
        async with client:
            running = asyncio.create_task(client.start(config.token))
            stopping = asyncio.create_task(stop.wait())
            async with outbox_worker(service, deliver, retry=config.outbox_retry):
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
                client.accepting = False  # new messages are dropped from here on
            stopping.cancel()
            if running.done():
                running.result()  # a start-up failure: raise it
            await client.close()
            print("Discord: stopped.", flush=True)
    except discord.LoginFailure:
        raise SettingsError(
            "DISCORD_TOKEN was rejected by Discord: reset the token in the Developer Portal "
            "(Bot > Reset Token) and copy the new one"
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise SettingsError(
            "Discord closed the gateway with code 4014 (privileged intent not enabled): turn on "
            "Message Content Intent in the Developer Portal > Bot > Privileged Gateway Intents"
        ) from None
