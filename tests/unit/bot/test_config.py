"""The bot's settings: BOT_* keys, blank means unset, webhook mode needs its URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from src.bot.config import BotSettings


def settings(**values: object) -> BotSettings:
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_and_blank_keys(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BOT_TOKEN", "123:abc")
    monkeypatch.setenv("BOT_SERVICE_API_KEY", "")
    monkeypatch.setenv("BOT_MAX_ACTIVE_JOBS", "2")
    loaded = BotSettings(_env_file=None)  # type: ignore[call-arg]
    assert loaded.token.get_secret_value() == "123:abc"
    assert loaded.service_api_key is None and loaded.max_active_jobs == 2
    assert loaded.mode == "polling" and loaded.api_base_url == "https://api.telegram.org/bot"


def test_an_empty_token_is_refused_by_name():
    with pytest.raises(ValidationError, match="BOT_TOKEN"):
        settings(token=" ")


def test_webhook_mode_needs_its_url():
    with pytest.raises(ValidationError, match="BOT_WEBHOOK_URL"):
        settings(token="1:a", mode="webhook", webhook_url="")
    hooked = settings(token="1:a", mode="webhook", webhook_url="https://x.org/telegram")
    assert hooked.webhook_port == 8443


def test_the_job_limit_is_at_least_one():
    with pytest.raises(ValidationError):
        settings(token="1:a", max_active_jobs=0)
