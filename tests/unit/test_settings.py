"""Settings: read once from an injected mapping; secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.models import OfflineModel
from bot.models.select import describe, make_model
from bot.settings import SettingsError, load_settings


def test_defaults_without_any_environment() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.bot_database == "data/switchboard.db"
    assert str(settings.bot_workflow) == "ecommerce"  # a shipped workflow, found by name
    assert not settings.has_real_model
    assert isinstance(make_model(settings), OfflineModel)
    assert "offline demo" in describe(make_model(settings), settings)


def test_secrets_are_masked_everywhere() -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-very-secret"}, env_file=None)
    assert settings.has_real_model
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "sk-very-secret" not in text
    model = make_model(settings)
    assert "sk-very-secret" not in describe(model, settings)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BOT_DATABASE=from-file.db\nOPENAI_MODEL=file-model\n")
    settings = load_settings({"OPENAI_MODEL": "env-model"}, env_file=env_file)
    assert (settings.bot_database, settings.openai_model) == ("from-file.db", "env-model")


def test_empty_values_mean_unset() -> None:
    assert not load_settings({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}, None).has_real_model


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^BOT_WINDOW_TOKENS: .*greater than or equal to 100"):
        load_settings({"BOT_WINDOW_TOKENS": "5"}, env_file=None)


def test_env_example_lists_every_setting_with_a_valid_value(tmp_path: Path) -> None:
    from bot.settings import Settings

    example = (Path(__file__).parents[2] / ".env.example").read_text()
    lines = [line[2:] for line in example.splitlines() if line.startswith("# ") and "=" in line]
    listed = {line.split("=", 1)[0].lower() for line in lines}
    terminal = {"no_color", "term"}  # every terminal program's conventions, not ours to list
    assert listed == set(Settings.model_fields) - terminal
    uncommented = tmp_path / ".env"
    uncommented.write_text("\n".join(lines) + "\n")
    settings = load_settings({}, env_file=uncommented)  # every example value is accepted
    assert settings.bot_window_items == 200 and settings.discord_moderator_role == "Moderators"
