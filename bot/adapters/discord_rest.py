"""Discord REST calls the adapter makes itself, and endpoints chosen per client.

`EndpointHTTP` is discord.py's HTTP client with its REST base and gateway URL chosen per client
(`DISCORD_API_URL`, `DISCORD_GATEWAY_URL`: a proxy, or the local server the tests use) instead of
patching discord.py's process-wide defaults. Webhook executes and interaction responses go
through it too (discord.py's own helpers would not), with its rate-limit handling.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import discord
from discord.http import HTTPClient, Route

NO_MENTIONS_JSON: dict[str, Any] = {"parse": []}
DEFERRED_UPDATE = 6  # interaction callback: acknowledged, the message will be edited later
EPHEMERAL = 64
FIRST_CONNECT_TIMEOUT_S = 30.0  # below discord.py's own 60 s, so a hang is ours to name


class GatewayUnreachable(Exception):
    """The gateway could not be reached before the first connection.

    Deliberately not one of the errors discord.py retries: a client that never connected has no
    session to resume (discord.py 2.7 then fails with an AttributeError), so start-up stops
    with one line instead. After the first connection, discord.py reconnects on its own.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Discord's gateway at {url} ({reason})")
        self.url = url
        self.reason = reason


class EndpointHTTP(HTTPClient):
    """discord.py's HTTP client, sending REST calls and the gateway to configured endpoints."""

    def __init__(self, *args: Any, api_url: str | None, gateway_url: str | None, **kw: Any):
        super().__init__(*args, **kw)
        self.api_url = api_url.rstrip("/") if api_url else None
        self.gateway_url = gateway_url
        self.connected = False  # the gateway was reached once

    async def request(self, route: Route, **kwargs: Any) -> Any:
        if self.api_url and route.url.startswith(Route.BASE):
            route.url = self.api_url + route.url[len(Route.BASE) :]
        return await super().request(route, **kwargs)

    async def ws_connect(self, url: str, *, compress: int = 0) -> Any:
        default = str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        if self.gateway_url and url.startswith(default):
            url = self.gateway_url + url[len(default) :]  # keep the query discord.py adds
        if self.connected:
            return await super().ws_connect(url, compress=compress)
        try:
            connecting = super().ws_connect(url, compress=compress)
            socket = await asyncio.wait_for(connecting, FIRST_CONNECT_TIMEOUT_S)
        except (aiohttp.ClientError, OSError) as exc:  # OSError: timeouts and DNS too
            raise GatewayUnreachable(url.partition("?")[0], type(exc).__name__) from exc
        self.connected = True
        return socket


async def execute_webhook(
    http: HTTPClient, hook: tuple[int, str], thread: int, payload: dict[str, Any]
) -> dict[str, Any]:
    """Post through a webhook into a thread and return the message Discord created."""
    route = Route(
        "POST", "/webhooks/{webhook_id}/{webhook_token}", webhook_id=hook[0], webhook_token=hook[1]
    )
    params = {"wait": "1", "thread_id": str(thread)}
    message: dict[str, Any] = await http.request(route, json=payload, params=params)
    return message


def _webhook_message(method: str, hook: tuple[int, str], message: int) -> Route:
    return Route(
        method,
        "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
        webhook_id=hook[0],
        webhook_token=hook[1],
        message_id=message,
    )


async def edit_webhook_message(
    http: HTTPClient, hook: tuple[int, str], thread: int, message: int, payload: dict[str, Any]
) -> None:
    """Edit a message the webhook posted in a thread (its author, the persona, stays)."""
    route = _webhook_message("PATCH", hook, message)
    await http.request(route, json=payload, params={"thread_id": str(thread)})


async def delete_webhook_message(
    http: HTTPClient, hook: tuple[int, str], thread: int, message: int
) -> None:
    """Delete a message the webhook posted in a thread."""
    route = _webhook_message("DELETE", hook, message)
    await http.request(route, params={"thread_id": str(thread)})


async def defer_update(http: HTTPClient, interaction_id: int, token: str) -> None:
    """Acknowledge a button click at once; the card is edited when the action is done."""
    route = Route(
        "POST",
        "/interactions/{interaction_id}/{interaction_token}/callback",
        interaction_id=interaction_id,
        interaction_token=token,
    )
    await http.request(route, json={"type": DEFERRED_UPDATE})


async def follow_up(http: HTTPClient, application_id: int, token: str, text: str) -> None:
    """A private answer to the person who clicked, after the click was acknowledged."""
    route = Route(
        "POST",
        "/webhooks/{webhook_id}/{webhook_token}",
        webhook_id=application_id,
        webhook_token=token,
    )
    payload = {"content": text, "flags": EPHEMERAL, "allowed_mentions": NO_MENTIONS_JSON}
    await http.request(route, json=payload)
