"""A local Slack: the Web API methods the bot uses and the Socket Mode WebSocket, on 127.0.0.1.

The real slack-bolt and slack-sdk talk to it: `apps.connections.open` hands out this server's
WebSocket URL, events are pushed as Socket Mode envelopes and must be acked, and every Web API
call is recorded. `rate_limit(n)` makes the next n `chat.postMessage` calls answer 429.
`answer_delay(method, args)` holds the answer to a post for that many seconds after the message
is shown (`held` lists, per token, the posts shown whose answer has not gone out yet): a process
killed meanwhile never hears that its post was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER = "UBOT"
BOT_ID = "BBOT"


@dataclass
class Call:
    """One Web API call: the method, its arguments, the token, and the ts it created."""

    method: str
    args: dict[str, Any]
    token: str
    ts: str | None = None
    refused: bool = False  # answered with an error: nothing changed
    at: float = field(default_factory=time.monotonic)  # when it came in


@dataclass
class Visible:
    """A message as a person sees it in Slack now: after updates, unless deleted."""

    ts: str
    channel: str
    thread_ts: str | None
    username: str
    text: str
    args: dict[str, Any]
    metadata: dict[str, Any] | None = None


@dataclass
class SlackServer:
    calls: list[Call] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    port: int = 0
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _limited: int = 0
    members: dict[str, list[str]] = field(default_factory=dict)
    refuse_posts: int = 0
    hang_text: str | None = None
    refuse_text: str | None = None  # posts holding it are refused for good (msg_too_long)
    accept_then_hang: str | None = None  # a post with this text is posted; its answer never comes
    fail_channel: dict[str, int] = field(default_factory=dict)  # channel -> 500s still to give
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    redeliver: bool = False  # resend unacknowledged events, as Slack does (up to 3 retries)
    ack_timeout: float = 3.0
    unacked: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    # Seconds to hold the answer to a chat.postMessage/chat.update after showing the message.
    answer_delay: Callable[[str, dict[str, Any]], float] | None = None
    held: dict[str, list[Call]] = field(default_factory=dict)  # token -> shown, not answered yet

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> SlackServer:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/nope/{method}", self._not_found)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release.set()  # let held answers go, so that the server stops at once
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SlackServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def rate_limit(self, times: int) -> None:
        self._limited = times

    # Web API

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="not found")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)  # some methods send `params` in the URL
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        posted = method in ("chat.postMessage", "chat.update")
        if posted and self.refuse_text and self.refuse_text in str(args.get("text", "")):
            self.calls.append(Call(method, args, token, refused=True))
            return web.json_response({"ok": False, "error": "msg_too_long"})
        if posted and self.fail_channel.get(str(args.get("channel")), 0) > 0:
            self.fail_channel[str(args.get("channel"))] -= 1
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        if method == "chat.postMessage" and self.refuse_posts > 0:
            self.refuse_posts -= 1
            return web.json_response({"ok": False, "error": "internal_error"}, status=500)
        posting = method in ("chat.postMessage", "chat.update")
        if posting and self.hang_text and args.get("text") == self.hang_text:
            await self.release.wait()
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client is gone: nothing was posted
        self.calls.append(Call(method, args, token))
        if posting and self.accept_then_hang and self.accept_then_hang in str(args.get("text")):
            self.accept_then_hang = None
            self.calls[-1].ts = self._chat_postMessage(args)["ts"]
            await self.release.wait()  # posted; the caller never hears so (until the server stops)
        if method == "chat.postMessage" and self._limited > 0:
            self._limited -= 1
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "0"}
            )
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
            self, "_" + method.replace(".", "_"), lambda args: {}
        )
        answer = handler(args)
        call = self.calls[-1]
        call.ts = answer.get("ts")
        hold = self.answer_delay(method, args) if posting and self.answer_delay else 0.0
        if hold > 0:  # shown already; the caller hears so only later, if it is still there
            held = self.held.setdefault(token, [])
            held.append(call)
            try:
                await asyncio.sleep(hold)
            finally:
                held.remove(call)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the caller is gone: it never hears
        return web.json_response({"ok": True, **answer})

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://test.slack.example/",
            "team": "Test",
            "user": "switchboard",
            "team_id": "T1",
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/socket"}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        return {"channel": args.get("channel"), "ts": ts, "message": {"text": args.get("text")}}

    def _conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "members": self.members.get(args.get("channel", ""), []),
            "response_metadata": {"next_cursor": ""},
        }

    def _chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = args.get("channel"), str(args.get("message_ts", "")).replace(".", "")
        return {
            "channel": channel,
            "permalink": f"https://test.slack.example/archives/{channel}/p{ts}",
        }

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": args.get("channel"), "ts": args.get("ts")}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        thread = args.get("ts")
        shown = [v for v in self.visible(args.get("channel")) if thread in (v.thread_ts, v.ts)]
        return {"messages": self._read(shown, args), "has_more": False}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        shown = [v for v in self.visible(args.get("channel")) if v.thread_ts is None]
        return {"messages": self._read(shown, args), "has_more": False}

    def _read(self, shown: list[Visible], args: dict[str, Any]) -> list[dict[str, Any]]:
        oldest = float(args.get("oldest") or 0)
        metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        return [
            {"type": "message", "ts": v.ts, "text": v.text, "bot_id": BOT_ID}
            | ({"metadata": v.metadata} if metadata and v.metadata else {})
            for v in shown
            if float(v.ts) >= oldest
        ]

    # Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        socket._switchboard_opened = time.monotonic()  # type: ignore[attr-defined]
        self._sockets.append(socket)
        self._connected.set()
        if self.redeliver:
            asyncio.get_running_loop().create_task(self._resend(socket))
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                data = json.loads(message.data)
                if "envelope_id" in data:
                    self.acks.append(data["envelope_id"])
                    self.unacked.pop(data["envelope_id"], None)
        self._sockets.remove(socket)
        if not self._sockets:
            self._connected.clear()
        return socket

    async def _resend(self, socket: web.WebSocketResponse) -> None:
        """Deliver again what was not acknowledged: on a new connection, and after a timeout."""
        await asyncio.sleep(0.05)
        while not socket.closed:
            now = time.monotonic()
            for envelope_id, (envelope, sent) in list(self.unacked.items()):
                if envelope["retry_attempt"] >= 3:
                    self.unacked.pop(envelope_id, None)  # Slack gives up after three retries
                    continue
                if sent < now - self.ack_timeout or sent < self._since(socket):
                    retry = {**envelope, "retry_attempt": envelope["retry_attempt"] + 1}
                    retry["retry_reason"] = "timeout"
                    self.unacked[envelope_id] = (retry, now)
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await socket.send_str(json.dumps(retry))
            await asyncio.sleep(0.2)

    def _since(self, socket: web.WebSocketResponse) -> float:
        return getattr(socket, "_switchboard_opened", 0.0)

    async def connected(self, within: float = 10) -> None:
        await asyncio.wait_for(self._connected.wait(), within)

    async def push(
        self, event: dict[str, Any], *, event_id: str | None = None, retry: int = 0
    ) -> str:
        """Deliver an Events API payload over the socket; returns its envelope id."""
        await self.connected()
        envelope_id = str(uuid.uuid4())
        payload = event_callback(event, event_id)
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry,
            "retry_reason": "timeout" if retry else "",
            "payload": payload,
        }
        self.unacked[envelope_id] = (envelope, time.monotonic())
        with contextlib.suppress(ConnectionError, RuntimeError):  # a dying connection
            await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    async def click(self, message: Visible, action_id: str, *, user: str) -> str:
        """A user clicks a button of `message` (a block_actions interaction over the socket)."""
        await self.connected()
        button = next(
            element
            for block in message.args.get("blocks", [])
            if block["type"] == "actions"
            for element in block["elements"]
            if element["action_id"] == action_id
        )
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": user, "team_id": "T1"},
            "api_app_id": "A1",
            "token": "verification-token",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            "trigger_id": "trigger",
            "team": {"id": "T1", "domain": "test"},
            "channel": {"id": message.channel, "name": "moderators"},
            "message": {
                "type": "message",
                "ts": message.ts,
                "text": message.text,
                "blocks": message.args.get("blocks", []),
            },
            "response_url": f"http://127.0.0.1:{self.port}/response",
            "actions": [{**button, "block_id": "b", "action_ts": str(time.time())}],
        }
        envelope_id = str(uuid.uuid4())
        await self._sockets[-1].send_str(
            json.dumps(
                {
                    "envelope_id": envelope_id,
                    "type": "interactive",
                    "accepts_response_payload": False,
                    "payload": payload,
                }
            )
        )
        return envelope_id

    # Reading what the bot did

    def visible(self, channel: str | None = None) -> list[Visible]:
        """The bot's messages as they stand now, in posting order."""
        shown: dict[str, Visible] = {}
        for call in self.calls:
            if call.method == "chat.postMessage" and call.ts:
                args = call.args
                shown[call.ts] = Visible(
                    call.ts,
                    args["channel"],
                    args.get("thread_ts"),
                    args.get("username", ""),
                    args["text"],
                    args,
                    _metadata(args),
                )
            elif call.refused:
                continue
            elif call.method == "chat.update" and call.args["ts"] in shown:
                shown[call.args["ts"]].text = call.args["text"]
                shown[call.args["ts"]].metadata = (
                    _metadata(call.args) or shown[call.args["ts"]].metadata
                )
                if "blocks" in call.args:
                    shown[call.args["ts"]].args = {
                        **shown[call.args["ts"]].args,
                        "blocks": call.args["blocks"],
                    }
            elif call.method == "chat.delete":
                shown.pop(call.args["ts"], None)
        return [v for v in shown.values() if channel is None or v.channel == channel]

    def posts(self, channel: str | None = None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.method == "chat.postMessage"
            and (channel is None or call.args.get("channel") == channel)
        ]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; calls so far: {self.calls}")
            await asyncio.sleep(0.01)


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    metadata = args.get("metadata")
    return json.loads(metadata) if isinstance(metadata, str) else metadata


_event_ids = itertools.count(1)


def event_callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The Events API envelope body Slack sends for `event`."""
    return {
        "token": "verification-token",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_ids):06d}",
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": "T1", "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}
        ],
    }


_ts = itertools.count(1)


def user_message(
    text: str,
    *,
    channel: str = "C1",
    thread_ts: str | None = None,
    user: str = "U1",
    kind: str = "message",
    **extra: Any,
) -> dict[str, Any]:
    """A user's message event (or `kind="app_mention"`) as Slack delivers it."""
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": f"1700000000.{next(_ts):06d}",
        "channel": channel,
        "channel_type": "channel",
        "event_ts": "1700000000.000000",
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a request signed as Slack signs it."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + stamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/json",
    }
