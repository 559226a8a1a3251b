"""The reference Telegram bot: voice notes in, transcripts out, through the typed client.

Run it with `scripts/bot.sh` (settings: the BOT_* keys of `.env.example`). It imports the
service only through `src.client` (the `bot-client-only` contract in pyproject.toml), so it runs
on any machine that reaches the service's HTTP API.
"""
