"""Worker restart time: a fresh `python -m src.worker` against one forked by the supervisor.

    uv run python -m scripts.bench.restart [--rounds 3]

Both on the tiny test models and a private redis-server; each figure is the time until the
replacement publishes its readiness beacon (`asr:worker:NAME` with its own pid), i.e. takes jobs.
Cold: from the process start (what scripts/start_workers.sh did after its 2 s pause, and what
systemd does after RestartSec=2). Forked: from the SIGKILL of a worker-1 that the supervisor runs
to its replacement's beacon. Prints one JSON object; appends it to $RELIABILITY_LOG when set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from scripts.bench.common import ROOT, log, machine_info
from scripts.bench.results import Stats
from scripts.bench.stack import model_dirs
from tests.support.processes import RedisServer, WorkerProcess, service_env, wait_for

QUICK_EXIT_S = 10.0  # src/worker/supervisor.py: a worker must live this long to restart at once


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and the private part of it (what exiting would free; shared pages are counted once
    for the supervisor and its forks), from /proc/PID/smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        kb = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in fh) if "kB" in v}
    private = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"rss_mb": round(kb.get("Rss", 0) / 1024), "private_mb": round(private / 1024)}


def beacon(conn: redis.Redis, name: str = "worker-1") -> dict[str, Any] | None:
    raw = conn.get(f"asr:worker:{name}")
    return json.loads(raw) if raw else None


def cold_start(env: dict[str, str], out: Path, conn: redis.Redis) -> tuple[float, dict[str, float]]:
    """Seconds from `python -m src.worker` to its readiness beacon, and its memory then."""
    worker, started = WorkerProcess("cold-1", env, out), time.monotonic()
    worker.start()
    try:
        worker.wait_ready(conn)
        return time.monotonic() - started, memory_mb(worker.proc.pid)  # type: ignore[union-attr]
    finally:
        worker.stop(30)
        conn.delete("asr:worker:cold-1")


def forked_restart(conn: redis.Redis, supervisor: subprocess.Popen[bytes]) -> float:
    """SIGKILL worker-1 (after it has lived, so it restarts without back-off); seconds until a
    new worker-1 publishes its beacon."""
    time.sleep(QUICK_EXIT_S)
    old_pid = beacon(conn)["pid"]  # type: ignore[index]
    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)

    def replaced() -> dict[str, Any] | None:
        if supervisor.poll() is not None:
            raise RuntimeError("the supervisor exited")
        info = beacon(conn)
        return info if info and info["pid"] != old_pid else None

    wait_for(replaced, 120, 0.05, "worker-1 replacement")
    return time.monotonic() - killed


def measure(rounds: int, work: Path) -> dict[str, Any]:
    models = {k: Path(v) for k, v in model_dirs("tiny").items()}
    server = RedisServer(work / "redis").start()
    storage, out = work / "storage", work / "out"
    storage.mkdir()
    out.mkdir()
    conn = server.client()
    env = service_env(server.port, storage, models, RQ_WORKER_COUNT="1", WORKER_PID_DIR=str(work))
    cold: list[float] = []
    memory: dict[str, dict[str, float]] = {}
    supervisor: subprocess.Popen[bytes] | None = None
    try:
        for i in range(rounds):
            seconds, memory["cold_worker"] = cold_start(env, out, conn)
            cold.append(seconds)
            log(f"cold start {i + 1}/{rounds}: {seconds:.2f}s")
        started = time.monotonic()
        with open(out / "supervisor.out", "ab") as log_file:
            supervisor = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "start_workers.sh"), "1"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        info = wait_for(lambda: beacon(conn), 180, 0.05, "worker-1 ready")
        first = time.monotonic() - started
        log(f"supervisor start to worker-1 ready: {first:.2f}s")
        memory["supervisor"] = memory_mb(supervisor.pid)
        memory["forked_worker"] = memory_mb(info["pid"])  # type: ignore[index]
        forked = [forked_restart(conn, supervisor) for _ in range(rounds)]
        log(f"forked restarts: {forked}")
    finally:
        if supervisor is not None:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(supervisor.pid, signal.SIGKILL)
                supervisor.wait(10)
        server.stop()
    return {
        "figure": "worker restart: time until the replacement takes jobs",
        "machine": machine_info(),
        "cold_start_s": Stats.of(cold, digits=2).model_dump(),
        "cold_restart_old_script_s": round(2 + sum(cold) / len(cold), 2),
        "forked_restart_s": Stats.of(forked, digits=2).model_dump(),
        "supervisor_first_ready_s": round(first, 2),
        "memory_when_ready": memory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp:
        text = json.dumps(measure(args.rounds, Path(tmp)))
    sys.stdout.write(text + "\n")
    if path := os.environ.get("RELIABILITY_LOG"):
        with contextlib.suppress(OSError), open(path, "a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
