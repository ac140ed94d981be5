"""The Discord adapter: gateway messages and clicks in; posts under agent personas out.

A mention in a text channel opens a public thread on that message and the conversation lives
there; later messages in a thread the store knows continue it without a mention. Replies go
through one webhook per parent channel, so each agent speaks under its own name and avatar.
Mentions are disabled on the client and on every send: model text can never ping anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import discord

from bot.adapters import discord_rest as rest
from bot.adapters.discord_cards import NO_MENTIONS, card_embed, card_view, is_moderator, to_click
from bot.adapters.text import split_text
from bot.engine.agents import Persona
from bot.runtime import serving, stop_signal
from bot.service import CaseCard, Click, ConversationService, IncomingMessage, Post, Refused
from bot.service.rules import WORKING_TEXT
from bot.settings import Settings, SettingsError
from bot.store.values import SessionKey, StoreError

log = logging.getLogger(__name__)

PLATFORM = "discord"
POST_LIMIT = 2000
SIGN_IN_TIMEOUT_S = 30.0
WEBHOOK_NAME = "Switchboard"
_FORBIDDEN_NAME = re.compile(r"discord|clyde", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    """What the Discord adapter needs, checked at start-up."""

    token: str
    api_url: str | None = None
    gateway_url: str | None = None
    moderator_channel: int | None = None
    moderator_role: str | None = None
    shard_id: int | None = None
    shard_count: int | None = None
    stream: bool = False  # replies grow in a placeholder message as they are written

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
            shard_id,
            shard_count,
            settings.bot_stream,
        )


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Discord's refusals for good (a 4xx but 429) become `Refused`; the rest stays as it is."""
    try:
        yield
    except discord.HTTPException as exc:
        if exc.status == 429 or exc.status >= 500:
            raise
        raise Refused(f"Discord refused it (HTTP {exc.status}, code {exc.code})") from exc


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
    """discord.py's client as the bot's `Platform`: events to the service, posts to Discord."""

    name = PLATFORM
    stream_rate: float | None = None  # discord.py keeps to each route's limits (its headers)
    stream_interval: float | None = None
    redelivers = True  # what a stopped process missed is read back at the start

    def __init__(self, config: DiscordConfig, **options: Any) -> None:
        # The bot uses no voice: skip discord.py's warnings about voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True
        if config.shard_count is not None:
            options |= {"shard_id": config.shard_id, "shard_count": config.shard_count}
        super().__init__(intents=intents, allowed_mentions=NO_MENTIONS, **options)
        _quiet_reconnects()
        self.http = rest.EndpointHTTP(
            self.loop, api_url=config.api_url, gateway_url=config.gateway_url
        )
        self._connection.http = self.http
        self.config = config
        self.placeholders = config.stream  # a message to write a reply into as it grows
        self.cards_setting = None if config.moderator_channel else "DISCORD_MODERATOR_CHANNEL"
        self.service: ConversationService | None = None
        self._caught_up = False
        self._webhooks: dict[int, tuple[int, str]] = {}
        self._webhook_locks: dict[int, asyncio.Lock] = {}
        self._parents: OrderedDict[int, int | None] = OrderedDict()

    def attach(self, service: ConversationService) -> None:
        """The service the client hands messages and clicks to."""
        self.service = service

    async def on_ready(self) -> None:
        log.info("discord: connected as %s", self.user)
        print(f"Discord: connected as {self.user}.", flush=True)
        if self.service is not None and not self._caught_up:
            self._caught_up = True  # once per process: later READYs are reconnections
            read = await self.service.catch_up(self._messages_after)
            if read:
                log.info("discord: read back %d message(s) sent while the bot was away", read)

    async def on_message(self, message: discord.Message) -> None:
        incoming = self._incoming(message)
        if incoming is None or self.service is None:
            return
        if isinstance(message.channel, discord.TextChannel):
            try:
                await message.create_thread(name=thread_name(incoming.text))
            except discord.HTTPException as exc:  # e.g. a replayed message: the thread exists
                log.warning("discord: no new thread on %s: %s", message.id, exc)
        # If the store refused it, the user was told; Discord will not deliver it again, but
        # the read-back at the next start will.
        with contextlib.suppress(StoreError):
            await self.service.receive(incoming)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Buttons on review cards: acknowledged at once, then acted on by the service."""
        click = to_click(interaction)
        if click is None or self.service is None:
            return
        await rest.defer_update(self.http, interaction.id, interaction.token)
        self.service.later(click)

    def _incoming(self, message: discord.Message) -> IncomingMessage | None:
        me = self.user
        if me is None or message.author.bot or message.webhook_id or message.author.id == me.id:
            return None
        mentioned = any(user.id == me.id for user in message.mentions)
        channel = message.channel
        if isinstance(channel, discord.DMChannel):
            key_channel, thread_id, parent_id, mentioned = "dm", channel.id, None, True
        elif isinstance(channel, discord.Thread):
            key_channel, thread_id, parent_id = str(channel.guild.id), channel.id, channel.parent_id
        elif isinstance(channel, discord.TextChannel) and mentioned:
            key_channel, thread_id, parent_id = str(channel.guild.id), message.id, channel.id
        else:
            return None
        self._remember_parent(thread_id, parent_id)
        return IncomingMessage(
            platform=PLATFORM,
            channel=key_channel,
            thread=str(thread_id),
            text=strip_mention(message.content, me.id),
            event_id=str(message.id),
            author=str(message.author.id),
            mentioned=mentioned,
            stamp=f"{message.id:020d}",
        )

    # The Platform the service posts through.

    async def send(
        self, key: SessionKey, post: Post, *, tag: str, start: int = 0, plain: bool = False
    ) -> str | None:
        """Post a reply, handoff line or notice into the thread under the post's persona.
        `plain`: one part of plain text, without the handoff or notice formatting."""
        thread = int(key.thread)
        parent = None if key.channel == "dm" else await self._parent(thread)
        first: str | None = None
        chunks = [post.text[:POST_LIMIT] or "…"] if plain else self._chunks(post, parent)
        if post.replaces is not None and start == 0:  # the placeholder, in place (persona kept)
            with contextlib.suppress(discord.NotFound):
                await self._edit(thread, parent, int(post.replaces), chunks[0])
                first, start = post.replaces, 1
        for index in range(start, len(chunks)):
            nonce = f"sb{tag}.{index}"[:25]  # a direct message sent twice is kept once
            with _refusals():
                sent = await self._send(thread, parent, chunks[index], post.persona, nonce)
            first = first or sent
        return first

    async def find(
        self, key: SessionKey, post: Post, *, tag: str, after: str | None
    ) -> tuple[str | None, int]:
        """The post's parts already in the thread: the bot's messages after the newest one
        known to be sent, matched in order by their text (webhooks carry no other mark)."""
        thread = int(key.thread)
        parent = None if key.channel == "dm" else await self._parent(thread)
        chunks = self._chunks(post, parent)
        mine = None if parent is None else (await self._webhook(parent))[0]
        messages = await self.http.logs_from(thread, 50, after=int(after or thread))
        found: list[str] = []
        for message in sorted(messages, key=lambda m: int(m["id"])):
            ours = (
                message.get("author", {}).get("id") == str(self.user and self.user.id)
                if mine is None
                else message.get("webhook_id") == str(mine)
            )
            if ours and len(found) < len(chunks) and message.get("content") == chunks[len(found)]:
                found.append(str(message["id"]))
        return (found[0] if found else None, len(found))

    def _chunks(self, post: Post, parent: int | None) -> list[str]:
        text = post.text
        if post.kind == "working":
            text = f"-# {WORKING_TEXT}"
        elif post.kind == "handoff":
            text = f"-# ↪ {text}"
        elif post.kind == "notice":
            text = f"*{text}*"
        if parent is None and post.kind not in ("handoff", "working"):
            text = f"**{display_name(post.persona)}**: {text}"  # a DM has no webhook personas
        return split_text(text, POST_LIMIT)

    async def remove(self, key: SessionKey, ref: str) -> None:
        """Delete a placeholder; one already gone is fine."""
        thread = int(key.thread)
        parent = None if key.channel == "dm" else await self._parent(thread)
        with contextlib.suppress(discord.NotFound):
            if parent is None:
                await self.get_partial_messageable(thread).get_partial_message(int(ref)).delete()
            else:
                hook = await self._webhook(parent)
                await rest.delete_webhook_message(self.http, hook, thread, int(ref))

    async def show(self, key: SessionKey, ref: str | None, text: str, persona: Persona) -> None:
        """A reply being written, in its placeholder: its first part, mentions disabled."""
        if ref is None:
            return
        thread = int(key.thread)
        parent = None if key.channel == "dm" else await self._parent(thread)
        first = self._chunks(Post("reply", text, persona), parent)[0]
        await self._edit(thread, parent, int(ref), first)

    @contextlib.asynccontextmanager
    async def working(self, key: SessionKey) -> AsyncIterator[None]:
        """Show "typing" in the thread until the turn ends (discord.py renews it)."""
        typing = asyncio.create_task(self._keep_typing(int(key.thread)))
        try:
            yield
        finally:
            typing.cancel()

    async def send_card(self, card: CaseCard, ref: str | None, *, tag: str) -> str | None:
        """Post the case's card in the moderators' channel, or edit it in place."""
        channel_id = self.config.moderator_channel
        if channel_id is None:
            log.warning("case #%d: no DISCORD_MODERATOR_CHANNEL for its card", card.case.id)
            return None
        embed, view = card_embed(card), card_view(card)
        with _refusals():
            if ref is not None:
                where = json.loads(ref)
                message = self.get_partial_messageable(where["channel"]).get_partial_message(
                    where["message"]
                )
                await message.edit(embed=embed, view=view)
                return ref
            channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
            sent = await cast(discord.TextChannel, channel).send(
                embed=embed, view=view, allowed_mentions=NO_MENTIONS, nonce=tag[:25]
            )
        return json.dumps({"channel": channel_id, "message": sent.id})

    async def find_card(self, card: CaseCard, *, tag: str) -> str | None:
        return None  # the card's nonce makes Discord keep one copy of it

    async def is_moderator(self, click: Click) -> bool:
        interaction = cast(discord.Interaction, click.context)
        return is_moderator(interaction, self.config.moderator_role)

    async def tell(self, click: Click, text: str) -> None:
        interaction = cast(discord.Interaction, click.context)
        await rest.follow_up(self.http, interaction.application_id, interaction.token, text)

    async def _send(
        self, thread: int, parent: int | None, text: str, persona: Persona, nonce: str
    ) -> str:
        if parent is None:
            channel = self.get_partial_messageable(thread)
            message = await channel.send(text, allowed_mentions=NO_MENTIONS, nonce=nonce)
            return str(message.id)
        payload: dict[str, Any] = {
            "content": text,
            "username": display_name(persona),
            "allowed_mentions": rest.NO_MENTIONS_JSON,
        }
        if persona.avatar_url:
            payload["avatar_url"] = persona.avatar_url
        created = await rest.execute_webhook(
            self.http, await self._webhook(parent), thread, payload
        )
        return str(created["id"])

    async def _edit(self, thread: int, parent: int | None, message: int, text: str) -> None:
        if parent is None:
            partial = self.get_partial_messageable(thread).get_partial_message(message)
            await partial.edit(content=text, allowed_mentions=NO_MENTIONS)
            return
        payload = {"content": text, "allowed_mentions": rest.NO_MENTIONS_JSON}
        await rest.edit_webhook_message(
            self.http, await self._webhook(parent), thread, message, payload
        )

    async def _messages_after(self, key: SessionKey, stamp: str) -> list[IncomingMessage]:
        """A thread's messages after the one stamped `stamp`, as the gateway would have
        delivered them (Discord does not deliver again what a stopped bot missed)."""
        channel = self.get_channel(int(key.thread)) or await self.fetch_channel(int(key.thread))
        if not isinstance(channel, discord.Thread | discord.DMChannel):
            return []
        after = discord.Object(int(stamp))
        found = [m async for m in channel.history(after=after, oldest_first=True, limit=100)]
        return [incoming for m in found if (incoming := self._incoming(m)) is not None]

    async def _keep_typing(self, thread_id: int) -> None:
        async with self.get_partial_messageable(thread_id).typing():
            await asyncio.Event().wait()

    def _remember_parent(self, thread: int, parent: int | None) -> None:
        self._parents[thread] = parent
        self._parents.move_to_end(thread)
        while len(self._parents) > 10_000:
            self._parents.popitem(last=False)

    async def _parent(self, thread: int) -> int | None:
        """The text channel a thread belongs to (webhooks live there)."""
        if thread not in self._parents:
            channel = self.get_channel(thread) or await self.fetch_channel(thread)
            self._remember_parent(thread, getattr(channel, "parent_id", None))
        return self._parents[thread]

    async def _webhook(self, channel_id: int) -> tuple[int, str]:
        """The channel's Switchboard webhook (id, token): found or created once, then reused."""
        lock = self._webhook_locks.setdefault(channel_id, asyncio.Lock())
        async with lock:
            if channel_id not in self._webhooks:
                channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
                if not isinstance(channel, discord.TextChannel):
                    raise SettingsError(f"channel {channel_id} cannot hold webhooks")
                mine = [
                    hook
                    for hook in await channel.webhooks()
                    if hook.name == WEBHOOK_NAME
                    and hook.user is not None
                    and hook.user == self.user
                ]
                hook = mine[0] if mine else await channel.create_webhook(name=WEBHOOK_NAME)
                assert hook.token is not None
                self._webhooks[channel_id] = (hook.id, hook.token)
        return self._webhooks[channel_id]


async def serve(service: ConversationService, client: SwitchboardClient) -> None:
    """Sign in, then take gateway events until cancelled; start-up failures become one line."""
    client.attach(service)
    stop = stop_signal()
    try:
        async with client:
            await _sign_in(client)
            running = asyncio.create_task(client.connect())
            stopping = asyncio.create_task(stop.wait())
            async with serving(service):
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
                # Leaving: running turns finish; a message that arrives meanwhile is stored,
                # owed, and answered at the next start.
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
    except rest.GatewayUnreachable as exc:
        raise SettingsError(f"{exc}: check the network, or DISCORD_GATEWAY_URL") from None


async def _sign_in(client: SwitchboardClient) -> None:
    """Log in over REST, within `SIGN_IN_TIMEOUT_S`; a network failure or an error answer is
    one `SettingsError` naming the endpoint (a refused token stays `LoginFailure`)."""
    where = client.config.api_url or "https://discord.com/api/v10"
    try:
        await asyncio.wait_for(client.login(client.config.token), SIGN_IN_TIMEOUT_S)
    except discord.HTTPException as exc:  # a 5xx after discord.py's retries, a 404, a 429
        raise SettingsError(
            f"Discord answered the sign-in at {where} with HTTP {exc.status}: check "
            "DISCORD_API_URL, or try again later"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:  # refused, unknown host, timed out
        raise SettingsError(
            f"cannot reach Discord at {where} ({type(exc).__name__}): check the network, or "
            "DISCORD_API_URL"
        ) from None


class _NetworkTracebacks(logging.Filter):
    """discord.py logs a whole traceback each time a network failure makes it reconnect, which
    it then does on its own: one line naming the failure says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _RECONNECTS_ON):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"  # it will retry
        return True


# What discord.py's `Client.connect` retries on.
_RECONNECTS_ON = (
    OSError,
    aiohttp.ClientError,
    discord.HTTPException,
    discord.GatewayNotFound,
    discord.ConnectionClosed,
)


def _quiet_reconnects() -> None:
    """Install `_NetworkTracebacks` on the logger of discord.py's reconnect loop, once."""
    logger = logging.getLogger("discord.client")
    if not any(isinstance(found, _NetworkTracebacks) for found in logger.filters):
        logger.addFilter(_NetworkTracebacks())
