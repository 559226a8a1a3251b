"""The bot's own settings (BOT_* in the environment or `.env`), apart from the service's: the bot
is a client of the service and may run on another machine, so it reads nothing of `src.config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Telegram's own limits: a bot may download files up to 20 MB with getFile, and a message holds
# at most 4096 characters.
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
TELEGRAM_MESSAGE_LIMIT = 4096


class BotSettings(BaseSettings):
    """Typed view of the BOT_* keys; `.env.example` says what each one means."""

    model_config = SettingsConfigDict(
        env_prefix="BOT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    token: SecretStr
    service_url: str = "http://127.0.0.1:8000"
    service_api_key: SecretStr | None = None
    language: str = "zh"
    max_active_jobs: int = Field(3, ge=1)
    # Seconds between two edits of status messages in one chat (Telegram allows about one
    # message a second per chat; edits count).
    edit_interval_s: float = Field(2.0, ge=0)
    # How long one task is followed before the bot gives up on it.
    task_timeout_s: float = Field(3600, gt=0)
    history_limit: int = Field(10, ge=1, le=100)

    mode: Literal["polling", "webhook"] = "polling"
    # Webhook mode: the public HTTPS URL Telegram posts to, where the bot listens, and the secret
    # Telegram sends back in X-Telegram-Bot-Api-Secret-Token.
    webhook_url: str | None = None
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = Field(8443, ge=1, le=65535)
    webhook_path: str = "telegram"
    webhook_secret: SecretStr | None = None

    # The Bot API server: Telegram's, a self-hosted telegram-bot-api, or a test's fake one.
    api_base_url: str = "https://api.telegram.org/bot"
    api_file_url: str = "https://api.telegram.org/file/bot"

    @field_validator("service_api_key", "webhook_secret", "webhook_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        """`KEY=` in .env means unset."""
        return None if value == "" else value

    @field_validator("token")
    @classmethod
    def _token_given(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("BOT_TOKEN is empty: set the token @BotFather gave the bot")
        return value

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> BotSettings:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("BOT_MODE=webhook needs BOT_WEBHOOK_URL")
        return self
