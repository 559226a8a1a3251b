#!/usr/bin/env bash
# Start RQ_WORKER_COUNT ASR workers named worker-1..N and keep them running.
#
# Each worker is pinned to one GPU through CUDA_VISIBLE_DEVICES, round-robin over the GPUs that
# are visible (nvidia-smi, or an existing CUDA_VISIBLE_DEVICES list); with no GPU they run on CPU.
# A worker that dies is restarted after a short pause. SIGINT/SIGTERM stop them all (warm
# shutdown: a running job finishes first, as RQ does).
#
# Usage: scripts/start_workers.sh [COUNT]      (default: RQ_WORKER_COUNT from .env / settings)
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY="uv run python"

count=${1:-$($PY -c 'from src.asr.config import get_settings; print(get_settings().rq_worker_count)')}

# Number GPUs as nvidia-smi does, so worker-N's GPU is the one nvidia-smi lists.
export CUDA_DEVICE_ORDER=PCI_BUS_ID
gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=',' read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)
fi

stopping=0
declare -A pids=()

stop_all() {
  stopping=1
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
}
trap stop_all INT TERM

supervise() {
  local name=$1 gpu=$2 pid rc
  while :; do
    if [ -n "$gpu" ]; then
      CUDA_VISIBLE_DEVICES=$gpu ASR_WORKER_NAME=$name $PY -m src.asr.worker --name "$name" &
    else
      CUDA_VISIBLE_DEVICES= ASR_DEVICE=${ASR_DEVICE:-cpu} $PY -m src.asr.worker --name "$name" &
    fi
    pid=$!
    echo "$pid" > "${WORKER_PID_DIR:-/tmp}/asr-$name.pid"
    trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' INT TERM
    wait "$pid"; rc=$?
    echo "[start_workers] $name (pid $pid) exited with status $rc; restarting in 2s" >&2
    sleep 2
  done
}

for i in $(seq 1 "$count"); do
  name="worker-$i"
  gpu=""
  if [ "${#gpus[@]}" -gt 0 ]; then gpu=${gpus[$(( (i - 1) % ${#gpus[@]} ))]}; fi
  echo "[start_workers] $name on ${gpu:+GPU $gpu}${gpu:-CPU}" >&2
  supervise "$name" "$gpu" &
  pids[$name]=$!
done

while [ "$stopping" -eq 0 ]; do wait; done
wait
