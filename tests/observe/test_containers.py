"""The Dockerfile and compose.yaml name only settings the bot reads, run as a non-root user, and
start the `switchboard` command (no image is built here: that needs a Docker daemon)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.settings import Settings

ROOT = Path(__file__).parents[2]


def test_the_dockerfile_runs_switchboard_as_a_user_with_known_settings() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", text, re.MULTILINE)
    assert re.search(r"^USER switchboard$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["switchboard"]' in text
    block = text[text.index("ENV BOT_") : text.index("VOLUME")]
    names = re.findall(r"(BOT_[A-Z_]+)=", block)
    assert names and {name.lower() for name in names} <= set(Settings.model_fields)


def test_compose_runs_the_bot_on_postgresql_with_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    bot, db = compose["services"]["bot"], compose["services"]["db"]
    assert bot["build"] == "."
    assert bot["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert bot["environment"]["BOT_DATABASE"].startswith("postgresql://")
    assert {name.lower() for name in bot["environment"]} <= set(Settings.model_fields)
    assert db["image"].startswith("postgres:")
