"""`python -m src.bot`: the bot in long-polling or webhook mode, as BOT_MODE says."""

from __future__ import annotations

import logging

from telegram import Update

from src.bot.app import build_application
from src.bot.config import BotSettings


def main() -> None:
    settings = BotSettings()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level="INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Bot API call otherwise
    app = build_application(settings)
    if settings.mode == "webhook":
        app.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=settings.webhook_path,
            webhook_url=settings.webhook_url,
            secret_token=(
                settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
            ),
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES)


if __name__ == "__main__":
    main()
