"""A local Discord: the REST routes and the gateway the bot uses, on 127.0.0.1.

The real discord.py client logs in, opens the gateway (HELLO, IDENTIFY, READY, GUILD_CREATE,
heartbeat ACKs) and receives MESSAGE_CREATE events pushed by tests; threads, webhooks, webhook
executions and typing go through REST and are recorded. JSON is served with a Content-Type of
exactly `application/json`, which discord.py requires to decode it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

GUILD = 900000000000000001
CHANNEL = 900000000000000002
BOT = 900000000000000003
APP = 900000000000000004
USER = 900000000000000005
OTHER_BOT = 900000000000000006
MOD_CHANNEL = 900000000000000007
MOD_ROLE = 900000000000000008
TOKEN = "test-token"
_snowflakes = itertools.count(910000000000000000)


def snowflake() -> int:
    return next(_snowflakes)


def now() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
    }


BOT_USER = user(BOT, "Switchboard", bot=True)


def member(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": data,
        "roles": [],
        "joined_at": now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
        "avatar": None,
        "pending": False,
    }


def text_channel(channel_id: int = CHANNEL) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD),
        "name": "support",
        "position": 0,
        "permission_overwrites": [],
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def thread_channel(thread_id: int, name: str, parent: int = CHANNEL) -> dict[str, Any]:
    return {
        "id": str(thread_id),
        "type": 11,
        "guild_id": str(GUILD),
        "parent_id": str(parent),
        "owner_id": str(BOT),
        "name": name,
        "last_message_id": None,
        "message_count": 0,
        "member_count": 1,
        "rate_limit_per_user": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": now(),
            "locked": False,
            "create_timestamp": now(),
        },
    }


def guild(channels: list[dict[str, Any]], threads: list[dict[str, Any]]) -> dict[str, Any]:
    everyone = {
        "id": str(GUILD),
        "name": "@everyone",
        "permissions": "1071698660929",
        "position": 0,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }
    moderators = {
        **everyone,
        "id": str(MOD_ROLE),
        "name": "Moderators",
        "position": 1,
        "permissions": "0",
    }
    return {
        "id": str(GUILD),
        "name": "Test",
        "icon": None,
        "owner_id": str(USER),
        "roles": [everyone, moderators],
        "emojis": [],
        "stickers": [],
        "features": [],
        "member_count": 2,
        "members": [member(BOT_USER)],
        "channels": channels,
        "threads": threads,
        "voice_states": [],
        "presences": [],
        "large": False,
        "unavailable": False,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "system_channel_flags": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "joined_at": now(),
        "application_id": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "system_channel_id": None,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "description": None,
        "banner": None,
        "splash": None,
        "discovery_splash": None,
        "premium_subscription_count": 0,
        "public_updates_channel_id": None,
        "max_video_channel_users": 25,
        "stage_instances": [],
        "guild_scheduled_events": [],
        "premium_progress_bar_enabled": False,
        "safety_alerts_channel_id": None,
        "incidents_data": None,
    }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class DiscordServer:
    requests: list[Request] = field(default_factory=list)
    threads: dict[int, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    executions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    followups: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per channel
    clicked: dict[str, str] = field(default_factory=dict)
    clicked_at: dict[str, float] = field(default_factory=dict)
    close_with: int | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)  # webhook message edits, timed
    deleted: list[str] = field(default_factory=list)
    edit_limit: int = 5  # webhook message edits a second before a 429
    limited: int = 0  # 429s given to edits
    _edits_in: dict[int, int] = field(default_factory=dict)
    webhook_delay: float = 0.0  # seconds creating a webhook takes, as on a busy Discord
    port: int = 0
    _socket: web.WebSocketResponse | None = None
    _sequence: Any = field(default_factory=lambda: itertools.count(1))
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> DiscordServer:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> DiscordServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # REST

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body: Any = None
        if request.can_read_body:
            body = json.loads(await request.read() or b"null")
        self.requests.append(Request(request.method, path, dict(request.query), body))
        webhook = path.startswith(("/webhooks/", "/interactions/"))  # token in the URL
        if not webhook and request.headers.get("Authorization") != f"Bot {TOKEN}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        route = (request.method, _shape(path))
        handler = self._routes().get(route)
        if handler is None:
            return _json({"message": f"no fake for {route}", "code": 0}, 404)
        return await handler(path, request.query, body)

    def _routes(self) -> dict[tuple[str, str], Callable[..., Any]]:
        return {
            ("GET", "/users/@me"): self._me,
            ("GET", "/oauth2/applications/@me"): self._application,
            ("POST", "/channels/#/messages/#/threads"): self._create_thread,
            ("GET", "/channels/#"): self._channel,
            ("GET", "/channels/#/webhooks"): self._list_webhooks,
            ("POST", "/channels/#/webhooks"): self._create_webhook,
            ("POST", "/webhooks/#/*"): self._execute_webhook,
            ("PATCH", "/webhooks/#/*/messages/#"): self._edit_webhook_message,
            ("DELETE", "/webhooks/#/*/messages/#"): self._delete_webhook_message,
            ("POST", "/channels/#/typing"): self._typing,
            ("POST", "/channels/#/messages"): self._create_message,
            ("PATCH", "/channels/#/messages/#"): self._edit_message,
            ("GET", "/channels/#/messages"): self._read_messages,
            ("POST", "/interactions/#/*/callback"): self._interaction_callback,
        }

    async def _me(self, *args: Any) -> web.Response:
        return _json(BOT_USER)

    async def _application(self, *args: Any) -> web.Response:
        return _json(
            {
                "id": str(APP),
                "name": "Switchboard",
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user(USER, "owner"),
                "verify_key": "0" * 64,
                "team": None,
                "flags": 0,
                "interactions_endpoint_url": None,
                "summary": "",
            }
        )

    async def _create_thread(self, path: str, query: Any, body: Any) -> web.Response:
        message_id = int(path.split("/")[4])
        parent = int(path.split("/")[2])
        data = thread_channel(message_id, body["name"], parent)
        self.threads[message_id] = data
        await self.dispatch("THREAD_CREATE", {**data, "newly_created": True})
        return _json(data, 201)

    async def _channel(self, path: str, *args: Any) -> web.Response:
        channel_id = int(path.split("/")[2])
        if channel_id in self.threads:
            return _json(self.threads[channel_id])
        return _json(text_channel(channel_id))

    async def _list_webhooks(self, path: str, *args: Any) -> web.Response:
        channel = path.split("/")[2]
        return _json([w for w in self.webhooks.values() if w["channel_id"] == channel])

    async def _create_webhook(self, path: str, query: Any, body: Any) -> web.Response:
        await asyncio.sleep(self.webhook_delay)
        webhook_id = snowflake()
        data = {
            "id": str(webhook_id),
            "type": 1,
            "guild_id": str(GUILD),
            "channel_id": path.split("/")[2],
            "name": body["name"],
            "avatar": None,
            "token": f"hook-{webhook_id}",
            "application_id": str(APP),
            "user": BOT_USER,
        }
        self.webhooks[webhook_id] = data
        return _json(data)

    async def _execute_webhook(self, path: str, query: Any, body: Any) -> web.Response:
        if int(path.split("/")[2]) == APP:  # an interaction follow-up, e.g. a private refusal
            self.followups.append(body)
            return _json({"id": str(snowflake()), "channel_id": "0", "content": body["content"]})
        webhook = self.webhooks[int(path.split("/")[2])]
        assert path.split("/")[3] == webhook["token"]
        thread_id = query.get("thread_id", webhook["channel_id"])
        execution = {**body, "thread_id": thread_id, "wait": query.get("wait")}
        self.executions.append(execution)
        message: dict[str, Any] = {
            "id": str(snowflake()),
            "channel_id": thread_id,
            "guild_id": str(GUILD),
            "author": user(int(webhook["id"]), body.get("username") or "hook", bot=True),
            "content": body.get("content", ""),
            "timestamp": now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "webhook_id": webhook["id"],
            "components": [],
        }
        self.history.setdefault(thread_id, []).append(message)
        return _json(message)

    def _hooked(self, path: str, query: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The thread's history and the webhook message a `/webhooks/.../messages/ID` names."""
        webhook = self.webhooks[int(path.split("/")[2])]
        assert path.split("/")[3] == webhook["token"]
        history = self.history.get(query.get("thread_id", webhook["channel_id"]), [])
        message = next(m for m in history if m["id"] == path.split("/")[5])
        return history, message

    async def _edit_webhook_message(self, path: str, query: Any, body: Any) -> web.Response:
        """An edit of a webhook's message; a webhook allows `edit_limit` edits each second
        (Discord's buckets), said in the rate-limit headers, and a 429 past them."""
        window = int(time.monotonic())
        used = self._edits_in.get(window, 0)
        headers = {
            "X-RateLimit-Limit": str(self.edit_limit),
            "X-RateLimit-Remaining": str(max(self.edit_limit - used - 1, 0)),
            "X-RateLimit-Reset-After": f"{window + 1 - time.monotonic():.3f}",
            "X-RateLimit-Bucket": "webhook-edits",
        }
        if used >= self.edit_limit:
            self.limited += 1
            retry = {"message": "You are being rate limited.", "retry_after": 0.5, "global": False}
            return web.Response(
                body=json.dumps(retry).encode(),
                status=429,
                content_type="application/json",
                headers=headers,
            )
        self._edits_in = {window: used + 1}
        try:
            _, message = self._hooked(path, query)
        except StopIteration:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        message["content"] = body.get("content", message["content"])
        message["edited_timestamp"] = now()
        self.edits.append({**body, "id": message["id"], "at": time.monotonic()})
        return web.Response(
            body=json.dumps(message).encode(), content_type="application/json", headers=headers
        )

    async def _delete_webhook_message(self, path: str, query: Any, body: Any) -> web.Response:
        try:
            history, message = self._hooked(path, query)
        except StopIteration:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        history.remove(message)
        self.deleted.append(message["id"])
        return web.Response(status=204)

    def posted(self) -> list[tuple[str, str, str]]:
        """(persona, content, thread id) of the webhooks' messages as people see them now, in
        order: edits and deletions applied, placeholders left out."""
        ours = {str(hook) for hook in self.webhooks}
        found = [
            m for messages in self.history.values() for m in messages if m.get("webhook_id") in ours
        ]
        return [
            (m["author"]["username"], m["content"], m["channel_id"])
            for m in sorted(found, key=lambda m: int(m["id"]))
            if not m["content"].startswith(PLACEHOLDER)
        ]

    async def _create_message(self, path: str, query: Any, body: Any) -> web.Response:
        channel = path.split("/")[2]
        message = {
            "id": str(snowflake()),
            "channel_id": channel,
            "author": BOT_USER,
            "content": body.get("content") or "",
            "timestamp": now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": body.get("components") or [],
        }
        self.messages.append({**body, "channel_id": channel, "id": message["id"]})
        self.cards[message["id"]] = message
        return _json(message)

    async def _read_messages(self, path: str, query: Any, body: Any) -> web.Response:
        """A channel's messages after `after`, newest first, at most `limit`."""
        after = int(query.get("after", 0))
        limit = int(query.get("limit", 50))
        found = [m for m in self.history.get(path.split("/")[2], []) if int(m["id"]) > after]
        return _json(sorted(found, key=lambda m: int(m["id"]), reverse=True)[:limit])

    async def _edit_message(self, path: str, query: Any, body: Any) -> web.Response:
        message = self.cards[path.split("/")[4]]
        message.update({k: v for k, v in body.items() if k in ("embeds", "components", "content")})
        return _json(message)

    async def _interaction_callback(self, path: str, query: Any, body: Any) -> web.Response:
        interaction_id = path.split("/")[2]
        self.callbacks.append({**body, "at": time.monotonic()})
        if body["type"] == 7:  # UPDATE_MESSAGE: the card changes in place
            card = self.cards[self.clicked[interaction_id]]
            card.update({k: v for k, v in body["data"].items() if k in ("embeds", "components")})
        ephemeral = bool((body.get("data") or {}).get("flags", 0) & 64)
        interaction = {"id": interaction_id, "type": 3, "response_message_ephemeral": ephemeral}
        return _json({"interaction": interaction})

    async def click(
        self,
        message_id: str,
        custom_id: str,
        *,
        clicker: dict[str, Any],
        roles: tuple[int, ...] | list[int] = (),
        permissions: int = 0,
    ) -> None:
        """A member clicks a button on a message: INTERACTION_CREATE over the gateway."""
        interaction_id = str(snowflake())
        self.clicked_at[interaction_id] = time.monotonic()
        self.clicked[interaction_id] = message_id
        card = self.cards[message_id]
        channel = {**text_channel(int(card["channel_id"])), "name": "moderators"}
        clicking_member = {
            **member(clicker),
            "roles": [str(role) for role in roles],
            "permissions": str(permissions),
        }
        await self.dispatch(
            "INTERACTION_CREATE",
            {
                "id": interaction_id,
                "application_id": str(APP),
                "type": 3,
                "data": {"custom_id": custom_id, "component_type": 2},
                "guild_id": str(GUILD),
                "channel_id": card["channel_id"],
                "channel": channel,
                "member": clicking_member,
                "token": f"itoken-{interaction_id}",
                "version": 1,
                "message": {**card, "guild_id": str(GUILD)},
                "app_permissions": "0",
                "locale": "en-US",
                "guild_locale": "en-US",
                "entitlements": [],
                "authorizing_integration_owners": {"0": str(GUILD)},
                "attachment_size_limit": 10485760,
                "context": 0,
            },
        )

    async def _typing(self, *args: Any) -> web.Response:
        return web.Response(status=204)

    # Gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._socket = socket
        await socket.send_str(
            json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        )
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["op"] == 1:
                await socket.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
            elif data["op"] == 2:
                if self.close_with is not None:
                    await socket.close(code=self.close_with)
                    break
                await self._identify(data["d"])
        if self._socket is socket:
            self._socket = None
            self._ready.clear()
        return socket

    async def _identify(self, identify: dict[str, Any]) -> None:
        assert identify["token"] == TOKEN
        self.intents = identify["intents"]
        self.shard = identify.get("shard")
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": BOT_USER,
                "guilds": [{"id": str(GUILD), "unavailable": True}],
                "session_id": "session-1",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(APP), "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "shard": [0, 1],
            },
        )
        channels = [text_channel(), {**text_channel(MOD_CHANNEL), "name": "moderators"}]
        await self.dispatch("GUILD_CREATE", guild(channels, list(self.threads.values())))
        self._ready.set()

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        if self._socket is not None:
            frame = {"op": 0, "t": event, "s": next(self._sequence), "d": data}
            await self._socket.send_str(json.dumps(frame))

    async def ready(self, within: float = 10) -> None:
        await asyncio.wait_for(self._ready.wait(), within)

    async def say(
        self,
        content: str,
        *,
        channel: int = CHANNEL,
        author: dict[str, Any] | None = None,
        mentions: list[dict[str, Any]] = (),
        dispatch: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:  # type: ignore[assignment]
        """A user posts `content` in a channel or thread: MESSAGE_CREATE over the gateway
        (`dispatch=False`: while no bot is connected; only a read of the channel shows it)."""
        if dispatch:
            await self.ready()
        author = author or user(USER, "ana")
        message = {
            "id": str(snowflake()),
            "channel_id": str(channel),
            "guild_id": str(GUILD),
            "author": author,
            "member": {k: v for k, v in member(author).items() if k != "user"},
            "content": content,
            "timestamp": now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "@everyone" in content,
            "mentions": list(mentions),
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": [],
            **extra,
        }
        if message["guild_id"] is None:  # a DM: no guild, no member
            del message["guild_id"], message["member"]
        self.history.setdefault(str(channel), []).append(message)
        if dispatch:
            await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                seen = [f"{r.method} {r.path}" for r in self.requests[-10:]]
                raise AssertionError(f"timed out; last requests: {seen}")
            await asyncio.sleep(0.01)


PLACEHOLDER = "-# working on it"


def _shape(path: str) -> str:
    parts = path.strip("/").split("/")
    shaped = ["#" if part.isdigit() else part for part in parts]
    if shaped[:1] == ["webhooks"] and len(shaped) in (3, 5):
        shaped[2] = "*"
    if shaped[:1] == ["interactions"] and len(shaped) == 4:
        shaped[2] = "*"
    return "/" + "/".join(shaped)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )
