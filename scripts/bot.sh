#!/usr/bin/env bash
# Run the reference Telegram bot (src/bot) against a running service. Ctrl-C stops it.
#
#   scripts/bot.sh
#
# Settings: the BOT_* keys of .env (see .env.example); at least BOT_TOKEN (from @BotFather) and
# BOT_SERVICE_URL (+ BOT_SERVICE_API_KEY where the service has API_KEY). BOT_MODE=polling (the
# default) needs no public address; BOT_MODE=webhook listens on BOT_WEBHOOK_LISTEN:PORT for the
# HTTPS URL BOT_WEBHOOK_URL that a reverse proxy forwards to it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "[bot] installing uv" >&2
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
[ -f .env ] || { cp .env.example .env; echo "[bot] created .env from .env.example" >&2; }
# The bot needs neither torch nor FunASR: only the API's small dependencies and the `bot` extra.
uv sync --frozen --extra bot --no-dev --quiet

exec .venv/bin/python -m src.bot
