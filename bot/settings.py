"""Configuration, read once from the environment (and an optional `.env`) into a frozen object.

`load_settings` is the only place that reads the process environment; everything else is given a
`Settings`. Secrets are `SecretStr`, so they print as `**********` in logs and errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message says which and how to fix."""


class Settings(BaseModel):
    """Every setting Switchboard reads, by its environment variable name (lower-cased)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4.1-mini"
    openai_temperature: float | None = None
    openai_timeout: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=3, ge=0)
    openai_parallel_tool_calls: bool | None = False
    openai_tool_choice: str | None = None
    bot_workflow: Path = Path("ecommerce")  # a file, or the name of a shipped workflow
    bot_database: str = "data/switchboard.db"
    bot_shop_database: str = "data/shop.db"  # the demo shop's orders (`bot.shop`)
    bot_window_items: int = Field(default=200, ge=2)
    bot_window_tokens: int = Field(default=6000, ge=100)
    bot_window_cache_mb: int = Field(default=64, ge=1, le=65_536)  # recent windows kept
    bot_show_handoffs: bool = True
    bot_max_message_chars: int = Field(default=4000, ge=100)
    bot_max_reply_chars: int = Field(default=8000, ge=100, le=100_000)
    bot_max_reason_chars: int = Field(default=300, ge=20, le=2000)
    bot_transfer_retries: int = Field(default=1, ge=0, le=3)
    bot_stream: bool = True
    bot_stream_interval_ms: int = Field(default=1000, ge=100, le=60_000)
    bot_retention_days: float = Field(default=7.0, gt=0)
    bot_outbox_retry_s: float = Field(default=1.0, gt=0)
    bot_settle_ms: int | None = Field(default=None, ge=0, le=10_000)
    bot_start_settle_ms: int = Field(default=2000, ge=0, le=30_000)
    bot_lease_s: float = Field(default=15.0, ge=1, le=300)
    bot_sweep_s: float = Field(default=1.0, gt=0, le=60)
    bot_log_level: str = "WARNING"
    bot_log_format: Literal["text", "json"] = "text"  # json: one object per line
    bot_metrics_port: int | None = Field(default=None, ge=0, le=65535)  # /metrics, /healthz
    bot_trace_content: bool = False  # message text in trace attributes (off: never)

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str | None = None
    slack_moderator_channel: str | None = None
    slack_moderator_ids: str = ""
    port: int = Field(default=3000, ge=0, le=65535)

    discord_token: SecretStr | None = None
    discord_api_url: str | None = None
    discord_gateway_url: str | None = None
    discord_moderator_channel: int | None = None
    discord_moderator_role: str | None = None

    # Conventions of every terminal program (https://no-color.org), read for the console.
    no_color: str = ""
    term: str = ""

    @field_validator("openai_parallel_tool_calls", "openai_tool_choice", mode="before")
    @classmethod
    def _omit(cls, value: object) -> object:
        """`omit` leaves the field out of requests, for servers that reject it."""
        return None if isinstance(value, str) and value.strip().lower() == "omit" else value

    @field_validator("bot_log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        """`JSON` and `json` alike."""
        return value.strip().lower() if isinstance(value, str) else value

    def settle_s(self, shared: bool) -> float:
        """How long a message waits for one stamped earlier: 200 ms where several processes
        receive (PostgreSQL), nothing for one process, unless `BOT_SETTLE_MS` says otherwise."""
        if self.bot_settle_ms is not None:
            return self.bot_settle_ms / 1000
        return 0.2 if shared else 0.0

    @property
    def colour(self) -> bool:
        """Whether the console may use colour (on a terminal, that is)."""
        return not self.no_color and self.term != "dumb"

    @property
    def has_real_model(self) -> bool:
        """Whether an OpenAI key or an OpenAI-compatible base URL is configured."""
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else ""
        return bool(key or self.openai_base_url)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Build `Settings` from `environ` (default: the process environment) over `env_file`."""
    source: dict[str, Any] = {}
    if env_file is not None and Path(env_file).is_file():
        source.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    source.update(os.environ if environ is None else environ)
    names = Settings.model_fields
    values = {key.lower(): value for key, value in source.items() if key.lower() in names}
    values = {key: value for key, value in values.items() if value != ""}
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            lines.append(f"{name}: {error['msg']} (fix the variable in the environment or .env)")
        raise SettingsError("\n".join(lines)) from None
