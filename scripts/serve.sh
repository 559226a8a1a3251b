#!/usr/bin/env bash
# One command to run the service: dependencies, Redis, workers and the API. Ctrl-C stops it all.
#
#   scripts/serve.sh
#
# 1. installs uv if absent and syncs the locked environment (API + engine);
# 2. says in one line when a configured model is not on this box (src/asr/preflight.py);
# 3. uses the Redis configured in .env; when nothing answers there and `redis-server` is
#    installed, starts a local one with deploy/redis/redis.conf (append-only file on, data under
#    STORAGE_PATH/redis);
# 4. starts RQ_WORKER_COUNT workers (scripts/start_workers.sh) and the API (uvicorn).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "[serve] installing uv" >&2
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
[ -f .env ] || { cp .env.example .env; echo "[serve] created .env from .env.example" >&2; }
uv sync --frozen --extra engine --no-dev --quiet

PY=.venv/bin/python
eval "$($PY - <<'PYEOF'
import shlex
from src.config import get_settings
s = get_settings()
for k, v in {"REDIS_HOST": s.redis_host, "REDIS_PORT": s.redis_port, "STORAGE": s.storage_path,
             "API_HOST": s.api_host, "API_PORT": s.api_port, "API_RELOAD": int(s.api_reload),
             "REDIS_DSN": s.redis_dsn}.items():
    print(f"{k}={shlex.quote(str(v))}")
PYEOF
)"

# A first run without models says so now, in one line; the workers then wait for the models
# (and /api/v1/health shows each one's reason) instead of failing.
if ! missing=$($PY -m src.asr.preflight); then
  echo "[serve] $missing; the workers will wait for the models" >&2
fi

children=()
cleanup() {
  trap - INT TERM EXIT
  echo "[serve] stopping" >&2
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${REDIS_PIDFILE:-}" ] && [ -f "$REDIS_PIDFILE" ]; then
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true
  fi
}
trap cleanup INT TERM EXIT

if ! $PY -c "import redis,sys; redis.Redis.from_url('$REDIS_DSN', socket_connect_timeout=1).ping()" 2>/dev/null; then
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p "$STORAGE/redis"
    REDIS_PIDFILE="$(cd "$STORAGE/redis" && pwd)/redis.pid"
    echo "[serve] no Redis at $REDIS_HOST:$REDIS_PORT; starting a local one (data in $STORAGE/redis)" >&2
    redis-server deploy/redis/redis.conf --port "$REDIS_PORT" --dir "$(cd "$STORAGE/redis" && pwd)" \
      --pidfile "$REDIS_PIDFILE" --daemonize yes
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  else
    echo "[serve] Redis is not reachable at $REDIS_HOST:$REDIS_PORT and redis-server is not installed" >&2
    echo "        install it (apt-get install redis-server) or set REDIS_* in .env" >&2
    exit 1
  fi
fi

scripts/start_workers.sh &
children+=($!)

reload=()
[ "$API_RELOAD" = "1" ] && reload=(--reload --reload-dir src)
echo "[serve] API on http://$API_HOST:$API_PORT  (docs: /docs, health: /api/v1/health)" >&2
$PY -m uvicorn src.api.main:app --host "$API_HOST" --port "$API_PORT" --no-access-log \
  --http src.api.server:GuardedHttpToolsProtocol "${reload[@]}" &
children+=($!)
wait -n "${children[@]}" || true
