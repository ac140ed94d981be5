"""The Slack adapter: Slack events in as messages and clicks; `SlackPlatform` posts out.

A mention starts a conversation in a thread on that message (or in the thread it was posted
in); later messages in a thread the store knows continue it without a mention. One mention
arrives twice (`app_mention` and `message`) and retries repeat an event, so the inbound id is
`channel:ts`, which the service claims durably.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack_platform import DM_THREAD, PLATFORM, SlackPlatform
from bot.observe.server import Probe, add_routes
from bot.runtime import serving, stop_signal
from bot.service import Click, ConversationService, IncomingMessage
from bot.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# Message subtypes that are still a person writing: plain, with files, or also sent to channel.
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True, slots=True)
class SlackConfig:
    """What the Slack adapter needs, checked at start-up."""

    bot_token: str
    app_token: str | None
    signing_secret: str | None
    api_url: str | None
    port: int
    moderator_channel: str | None = None
    moderator_ids: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackConfig:
        """Refuse to start, with one line saying what to fix, on a missing or malformed token."""
        bot = _secret(settings.slack_bot_token)
        app = _secret(settings.slack_app_token)
        signing = _secret(settings.slack_signing_secret)
        if not bot:
            raise SettingsError(
                "SLACK_BOT_TOKEN is missing: copy the Bot User OAuth Token (xoxb-...) from your "
                "app's OAuth & Permissions page"
            )
        if not bot.startswith("xoxb-"):
            raise SettingsError(
                "SLACK_BOT_TOKEN does not look like a bot token: it should start with xoxb-"
            )
        if app and not app.startswith("xapp-"):
            raise SettingsError(
                "SLACK_APP_TOKEN does not look like an app-level token: it should start with "
                "xapp- (Basic Information > App-Level Tokens, scope connections:write)"
            )
        if not app and not signing:
            raise SettingsError(
                "set SLACK_APP_TOKEN for Socket Mode, or SLACK_SIGNING_SECRET for HTTP events "
                "(Basic Information > App Credentials)"
            )
        api_url = settings.slack_api_url
        if api_url and not api_url.endswith("/"):
            api_url += "/"
        ids = frozenset(part.strip() for part in settings.slack_moderator_ids.split(",") if part)
        return cls(
            bot,
            app or None,
            signing or None,
            api_url,
            settings.port,
            settings.slack_moderator_channel or None,
            ids,
        )


def _secret(value: Any) -> str:
    return value.get_secret_value().strip() if value is not None else ""


def to_incoming(event: dict[str, Any], bot_user_id: str | None) -> IncomingMessage | None:
    """A Slack message or app_mention event as an `IncomingMessage`; None for what to ignore."""
    if event.get("subtype") not in USER_SUBTYPES or event.get("bot_id") or not event.get("user"):
        return None  # edits, joins, bot posts (ours included), hidden events
    if event.get("user") == bot_user_id:
        return None
    channel, ts = event.get("channel"), event.get("ts")
    if not channel or not ts:
        return None
    text = str(event.get("text") or "")
    thread_ts = event.get("thread_ts")
    in_thread = bool(thread_ts) and thread_ts != ts
    mentioned = event.get("type") == "app_mention" or (
        bot_user_id is not None and f"<@{bot_user_id}" in text
    )
    if event.get("channel_type") == "im":
        thread, mentioned = (str(thread_ts) if in_thread else DM_THREAD), True
    elif mentioned:
        thread = str(thread_ts) if in_thread else str(ts)
    elif in_thread:
        thread = str(thread_ts)
    else:
        return None  # channel chatter outside any thread
    text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text).strip()
    return IncomingMessage(
        platform=PLATFORM,
        channel=channel,
        thread=thread,
        text=text,
        event_id=f"{channel}:{ts}",
        author=str(event["user"]),
        mentioned=mentioned,
        stamp=stamp(str(ts)),
    )


def stamp(ts: str) -> str:
    """A Slack `ts` ("1700000000.000016") as text that sorts in time order."""
    seconds, _, fraction = ts.partition(".")
    return f"{seconds.zfill(12)}.{fraction.ljust(6, '0')}"


class _TokenFromEnvironment(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns that our client's token wins; it is the same."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger(f"{__name__}.bolt")
    if not any(isinstance(f, _TokenFromEnvironment) for f in logger.filters):
        logger.addFilter(_TokenFromEnvironment())
    return logger


def web_client(config: SlackConfig) -> AsyncWebClient:
    """The Web API client, pointed at `SLACK_API_URL` if set, retrying 429s after Retry-After."""
    kwargs: dict[str, Any] = {"token": config.bot_token}
    if config.api_url:
        kwargs["base_url"] = config.api_url
    client = AsyncWebClient(**kwargs)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=5))
    return client


def build_app(
    service: ConversationService, platform: SlackPlatform, config: SlackConfig
) -> AsyncApp:
    """A Bolt app whose listeners only translate: events to messages, clicks to `Click`s."""
    app = AsyncApp(
        client=platform.client,
        signing_secret=config.signing_secret or "",
        request_verification_enabled=config.signing_secret is not None,
        logger=_bolt_logger(),
        # Acknowledge an event only once the listener has stored it: a message Slack was told
        # about is never lost, and one the store refused is delivered again.
        process_before_response=True,
    )

    async def on_message(event: dict[str, Any], context: Any) -> None:
        incoming = to_incoming(event, context.get("bot_user_id"))
        if incoming is not None:
            await service.receive(incoming)

    async def on_click(ack: Any, body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 s; the action waits for the thread, in the background
        click = body["actions"][0]
        action = str(click.get("action_id", "")).removeprefix("case_")
        once = f"click:{click.get('action_ts')}" if click.get("action_ts") else None
        user = str((body.get("user") or {}).get("id", ""))
        service.later(Click(str(click.get("value", ""))[:40], action, user, body, id=once))

    app.event("app_mention")(on_message)
    app.event("message")(on_message)
    app.action(re.compile(r"^case_(approve|reject|takeover|handback|close)$"))(on_click)
    return app


def events_app(app: AsyncApp, config: SlackConfig, path: str = "/slack/events") -> web.Application:
    """The HTTP endpoint for Slack's events and clicks. Bolt checks every signature (a bad or
    stale one gets 401); a validly signed body that is not valid JSON gets 400, not a 500."""
    verifier = SignatureVerifier(config.signing_secret or "")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if verifier.is_valid_request(body, dict(request.headers)) and not _readable(body):
            log.warning("slack: a signed request with a malformed body was refused")
            return web.Response(status=400, text="malformed request body")
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post(path, handle)
    return web_app


def _readable(body: bytes) -> bool:
    """An Events API body (JSON) or an interactivity one (a form whose `payload` is JSON)."""
    try:
        text = body.decode("utf-8")
        if text.lstrip().startswith("{"):
            return isinstance(json.loads(text), dict)
        form = urllib.parse.parse_qs(text, strict_parsing=bool(text))
        return "payload" not in form or isinstance(json.loads(form["payload"][0]), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _signed_in() -> bool:
    return True


def slack_platform(config: SlackConfig) -> SlackPlatform:
    """The platform the service posts through, on the configured Web API."""
    return SlackPlatform(
        web_client(config),
        moderator_channel=config.moderator_channel,
        moderator_ids=config.moderator_ids,
    )


async def serve(
    service: ConversationService,
    platform: SlackPlatform,
    config: SlackConfig,
    probe: Probe | None = None,
) -> None:
    """Check the token, then take events over Socket Mode or HTTP until cancelled. `probe` (see
    `runtime.monitoring`) is told how to see that Slack is connected, and in HTTP mode its
    `/metrics`, `/healthz` and `/readyz` are served on the events port too."""
    app = build_app(service, platform, config)
    try:
        identity = await app.client.auth_test()
    except SlackApiError as exc:
        data = exc.response.data
        reason = data.get("error") if isinstance(data, dict) else f"HTTP {exc.response.status_code}"
        raise SettingsError(
            f"SLACK_BOT_TOKEN was rejected by Slack ({reason}): check the token, or reinstall "
            "the app and copy the new Bot User OAuth Token"
        ) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        where = config.api_url or "slack.com"
        raise SettingsError(f"cannot reach Slack at {where} ({type(exc).__name__})") from None
    log.info("slack: signed in as %s in team %s", identity.get("user"), identity.get("team"))
    stop = stop_signal()
    async with serving(service):
        if config.app_token:
            handler = AsyncSocketModeHandler(app, config.app_token)
            await handler.connect_async()  # type: ignore[no-untyped-call]
            if probe is not None:
                probe.connected = handler.client.is_connected
            print("Slack: connected over Socket Mode.", flush=True)
            await stop.wait()
            await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            web_app = events_app(app, config)
            if probe is not None:  # one port: Slack's events, and the operator's endpoints
                add_routes(web_app, probe)
                probe.connected = _signed_in  # the token was accepted above
            runner = web.AppRunner(web_app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "0.0.0.0", config.port)
            await site.start()
            print(
                f"Slack: listening for events on port {config.port} at /slack/events.", flush=True
            )
            await stop.wait()
            await site.stop()
    if not config.app_token:
        await runner.cleanup()
    print("Slack: stopped.", flush=True)
