"""`python -m bot discord` as a real process: restarts, and start-up errors in one line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.chat_completions import ChatCompletionsServer, Delay, Reply, Step, canonical
from tests.fakes.discord_api import BOT, BOT_USER, TOKEN, DiscordServer
from tests.processes import bot, clean_env, stop
from tests.processes import started as wait_started


@pytest.fixture
async def discord_server() -> AsyncIterator[DiscordServer]:
    async with DiscordServer() as server:
        yield server


def environment(server: DiscordServer, **extra: str) -> dict[str, str]:
    return clean_env(
        DISCORD_TOKEN=TOKEN,
        DISCORD_API_URL=server.api_url,
        DISCORD_GATEWAY_URL=server.gateway_url,
        **extra,
    )


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await bot("discord", env=env)


async def started(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await bot("discord", env=env)
    await wait_started(process, "Discord: connected as Switchboard.")
    return process


async def stopped(process: asyncio.subprocess.Process) -> None:
    await stop(process)


async def test_a_restarted_process_continues_the_thread(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    async with ChatCompletionsServer(respond=canonical) as chat:
        env = environment(
            discord_server, OPENAI_BASE_URL=chat.base_url, BOT_DATABASE=str(tmp_path / "d.db")
        )
        first = await started(env)
        mention = await discord_server.say(
            f"<@{BOT}> I want to return my order", mentions=[BOT_USER]
        )
        await discord_server.wait_for(lambda: len(discord_server.posted()) == 2, within=20)
        await stopped(first)

        second = await started(env)
        await discord_server.say("Order 42", channel=int(mention["id"]))
        await discord_server.wait_for(lambda: len(discord_server.posted()) == 3, within=20)
        await stopped(second)
    last = discord_server.posted()[-1]
    assert last == (
        "Returns",
        "Thanks! Order 42 is eligible; a return label is on its way.",
        mention["id"],
    )
    assert len(discord_server.webhooks) == 1  # the restarted bot found its webhook again


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            "close_4014",
            "error: Discord closed the gateway with code 4014 (privileged intent not "
            "enabled): turn on Message Content Intent in the Developer Portal > Bot > Privileged "
            "Gateway Intents\n",
        ),
        (
            "bad_token",
            "error: DISCORD_TOKEN was rejected by Discord: reset the token in the "
            "Developer Portal (Bot > Reset Token) and copy the new one\n",
        ),
        (
            "no_token",
            "error: DISCORD_TOKEN is missing: copy the bot token from the Developer "
            "Portal (your application > Bot > Reset Token)\n",
        ),
        (
            "api_refused",
            "error: cannot reach Discord at http://127.0.0.1:9/api/v10 (ClientConnectorError): "
            "check the network, or DISCORD_API_URL\n",
        ),
        (
            "api_unknown_host",
            "error: cannot reach Discord at http://switchboard.invalid/api/v10 "
            "(ClientConnectorDNSError): check the network, or DISCORD_API_URL\n",
        ),
        (
            "gateway_refused",
            "error: cannot reach Discord's gateway at ws://127.0.0.1:9/gateway "
            "(ClientConnectorError): check the network, or DISCORD_GATEWAY_URL\n",
        ),
    ],
)
async def test_start_up_errors_are_one_clear_line(
    discord_server: DiscordServer, tmp_path: Path, setup: str, message: str
) -> None:
    env = environment(
        discord_server,
        OPENAI_API_KEY="sk-x",
        BOT_DATABASE=str(tmp_path / "d.db"),
        DISCORD_MODERATOR_CHANNEL="900000000000000007",
    )
    if setup == "close_4014":
        discord_server.close_with = 4014
    elif setup == "bad_token":
        env["DISCORD_TOKEN"] = "not-the-token"
    elif setup == "api_refused":
        env["DISCORD_API_URL"] = "http://127.0.0.1:9/api/v10"  # nothing listens there
    elif setup == "api_unknown_host":
        env["DISCORD_API_URL"] = "http://switchboard.invalid/api/v10"
    elif setup == "gateway_refused":
        env["DISCORD_GATEWAY_URL"] = "ws://127.0.0.1:9/gateway"
    else:
        del env["DISCORD_TOKEN"]
    process = await start(env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 1
    assert err.decode() == message
    assert "sk-x" not in err.decode() and "not-the-token" not in err.decode()


async def test_a_lost_gateway_is_retried_with_one_line_per_attempt(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    """After the first connection discord.py reconnects on its own; each failed attempt is one
    log line naming the failure, not a traceback."""
    env = environment(
        discord_server,
        OPENAI_API_KEY="sk-x",
        BOT_DATABASE=str(tmp_path / "d.db"),
        DISCORD_MODERATOR_CHANNEL="900000000000000007",
    )
    process = await started(env)
    await discord_server.stop()  # Discord goes away: the gateway and REST both
    assert process.stderr is not None
    seen = b""
    while b"Attempting a reconnect" not in seen:  # discord.py's backoff is random: wait for one
        seen += await asyncio.wait_for(process.stderr.readline(), timeout=20)
    err = seen.decode() + await stop(process)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    retries = [line for line in err.splitlines() if "Attempting a reconnect" in line]
    assert retries, err
    assert all(" WARNING discord.client: " in line for line in retries), retries
    assert all("(ClientConnectorError: Cannot connect to host" in line for line in retries)


async def test_missing_moderation_config_is_a_start_up_warning(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    discord_server.close_with = 4014  # stop right after start-up
    env = environment(discord_server, OPENAI_API_KEY="sk-x", BOT_DATABASE=str(tmp_path / "d.db"))
    process = await start(env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert err.decode().splitlines()[0] == (
        "warning: DISCORD_MODERATOR_CHANNEL is not set: escalations still open cases "
        "(`python -m bot cases`), but no card reaches moderators in Discord"
    )


async def test_a_process_runs_the_shard_it_is_given(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    env = environment(
        discord_server,
        OPENAI_API_KEY="sk-x",
        BOT_DATABASE=str(tmp_path / "d.db"),
        DISCORD_MODERATOR_CHANNEL="900000000000000007",
    )
    process = await bot("discord", "--shard-id", "1", "--shard-count", "2", env=env)
    await wait_started(process, "Discord: connected as Switchboard.")
    await stopped(process)
    assert discord_server.shard == [1, 2]

    bad = await bot("discord", "--shard-id", "2", "--shard-count", "2", env=env)
    _, err = await bad.communicate()
    assert bad.returncode == 1 and err.decode() == "error: --shard-id must be from 0 to 1\n"


async def test_messages_during_shutdown_and_while_away_are_answered_at_the_next_start(
    discord_server: DiscordServer, tmp_path: Path
) -> None:
    """Discord does not deliver again what a process missed: a message that arrives while the
    bot is shutting down is stored and answered at the next start, and one sent while no bot
    was running is read back from the thread then."""

    def slow_echo(body: dict[str, object]) -> Step:
        messages = body["messages"]
        assert isinstance(messages, list)
        said = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return Delay(1.0, Reply(f"echo {said}"))

    def replies() -> list[str]:
        return [content for _, content, _ in discord_server.posted()]

    async with ChatCompletionsServer(respond=slow_echo) as chat:
        env = environment(
            discord_server, OPENAI_BASE_URL=chat.base_url, BOT_DATABASE=str(tmp_path / "d.db")
        )
        first = await started(env)
        mention = await discord_server.say(f"<@{BOT}> m0", mentions=[BOT_USER])
        thread = int(mention["id"])
        await discord_server.wait_for(lambda: len(chat.requests) == 1)
        first.terminate()  # SIGTERM while m0's turn runs
        await asyncio.sleep(0.2)
        await discord_server.say("m1", channel=thread)  # during the drain
        _, err = await asyncio.wait_for(first.communicate(), timeout=30)
        assert first.returncode == 0, err.decode()
        assert replies() == ["echo m0"]  # the running turn finished; m1 waits, stored
        await discord_server.say("m2", channel=thread, dispatch=False)  # nobody listening

        second = await started(env)
        await discord_server.wait_for(lambda: len(replies()) == 3, within=20)
        await asyncio.sleep(0.3)
        await stopped(second)
    assert replies() == ["echo m0", "echo m1", "echo m2"]
