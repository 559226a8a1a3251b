#!/usr/bin/env bash
# Start RQ_WORKER_COUNT ASR workers named worker-1..N and keep them running.
#
# The work is done by the Python supervisor (src/worker/supervisor.py): it imports torch and FunASR
# once and forks each worker from that image, so a worker that dies is serving again in about
# 2 s instead of the ~17 s a fresh `python -m src.worker` needs. Each worker is pinned to one
# GPU through CUDA_VISIBLE_DEVICES, round-robin over the visible GPUs (an existing
# CUDA_VISIBLE_DEVICES list, else nvidia-smi); with no GPU they run on CPU. SIGINT/SIGTERM stop
# them all (warm shutdown: a running job finishes first, as RQ does). Pid files:
# ${WORKER_PID_DIR:-/tmp}/asr-worker-N.pid.
#
# Usage: scripts/start_workers.sh [COUNT]      (default: RQ_WORKER_COUNT from .env / settings)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY="uv run python"

# exec: the supervisor keeps this pid, so serve.sh's and systemd's signals reach it directly.
# shellcheck disable=SC2086  # PY may be the two words "uv run python"
exec $PY -m src.worker.supervisor "$@"
