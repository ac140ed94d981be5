"""What an MCP server is shown of the bot: its label hides credentials (it goes to logs, `check`
and `doctor`), and a stdio server does not inherit the bot's own credentials."""

from __future__ import annotations

from bot.engine.agents import McpServer
from bot.engine.mcp import _environment


def test_a_label_hides_passwords_queries_and_token_arguments() -> None:
    assert McpServer(url="https://me:pw@mcp.example.com/mcp?key=k").label == (
        "https://mcp.example.com/mcp"
    )
    server = McpServer("srv", ("--api-key", "abc", "--token=xyz", "--port", "9", "-v"))
    assert server.label == "srv --api-key *** --token=*** --port 9 -v"
    assert McpServer("python", ("-m", "bot.shop_mcp")).label == "python -m bot.shop_mcp"


def test_a_stdio_server_does_not_inherit_the_bot_s_credentials() -> None:
    given = {
        "PATH": "/bin",
        "OPENAI_API_KEY": "sk-1",
        "SLACK_BOT_TOKEN": "xoxb",
        "DISCORD_TOKEN": "d",
        "BOT_DATABASE": "postgresql://u:p@db/x",
        "BOT_SHOP_DATABASE": "shop.db",
    }
    assert _environment(given) == {"PATH": "/bin", "BOT_SHOP_DATABASE": "shop.db"}


def test_credentials_in_arguments_are_hidden_whatever_their_shape() -> None:
    server = McpServer(
        "srv",
        (
            "postgresql://app:S3cret@db/x",
            "--header",
            "Authorization: Bearer sk-1",
            "GITHUB_TOKEN=a",
        ),
    )
    assert server.label == "srv postgresql://db/x --header *** GITHUB_TOKEN=***"
