"""The service under test as real processes (a private redis-server, uvicorn, RQ workers), the
engine child (child.py), the clips, and the random-weight FunASR model dirs of
tests/support/tiny_models.py (tiny for the service, full-size for the engine figures).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis

from scripts.bench.client import Finished, Submitted, Upload, submit_all, wait_all
from scripts.bench.common import CHILD_PREFIX, ROOT, log
from tests.support.audio_samples import SPEECH_WAV, encode_audio, read_wav
from tests.support.processes import ApiProcess, RedisServer, WorkerProcess, service_env


def voice_note(seconds: float, dest_dir: Path) -> Path:
    """The committed speech fixture looped to `seconds`, as a Telegram-like OGG/Opus voice note
    (48 kHz, 24 kbit/s, as tests/support/audio_samples.py encodes it); cached in `dest_dir`."""
    dest = dest_dir / f"voice_{seconds:g}s.ogg"
    if not dest.exists():
        dest_dir.mkdir(parents=True, exist_ok=True)
        samples, rate = read_wav(SPEECH_WAV)
        looped = np.tile(samples, int(np.ceil(seconds * rate / len(samples))))
        tmp, opus = dest.with_name(f".{dest.name}.part"), {"b": "24000", "application": "audio"}
        encode_audio(
            looped[: round(seconds * rate)],
            rate,
            tmp,
            container="ogg",
            codec="libopus",
            out_rate=48000,
            codec_options=opus,
        )
        os.replace(tmp, dest)
    return dest


def seeded_lengths(n: int, lo: int, hi: int, seed: int) -> list[int]:
    """n whole-second lengths in [lo, hi], reproducible."""
    return [int(x) for x in np.random.default_rng(seed).integers(lo, hi + 1, size=n)]


def model_dirs(size: str, cache: Path = ROOT / "tests" / ".cache" / "models") -> dict[str, str]:
    """Build (or reuse) the random-weight model dirs; returns {'asr','vad','punc'} paths."""
    from tests.support.tiny_models import build_model_dirs

    t0 = time.perf_counter()
    dirs = build_model_dirs(cache, size=size)  # type: ignore[arg-type]
    if (took := time.perf_counter() - t0) > 1:
        log(f"built the {size} model dirs in {took:.0f}s under {cache}")
    return {"asr": str(dirs.asr), "vad": str(dirs.vad), "punc": str(dirs.punc)}


class Child:
    """The engine child process (child.py): one JSON line per command, one answer line each."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_path = env, log_dir / "engine-child.err"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as err:
            cmd = [sys.executable, "-m", "scripts.bench.child"]
            pipe = subprocess.PIPE
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdin=pipe,
                stdout=pipe,
                stderr=err,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def wait_ready(self) -> dict[str, Any]:
        """The child's first line: it has imported FunASR (`import_s`)."""
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(CHILD_PREFIX):
                return json.loads(line[len(CHILD_PREFIX) :])
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"engine child exited ({self.proc.poll()}): {tail}")

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        if not (answer := self.wait_ready()).get("ok"):
            raise RuntimeError(
                f"engine child {cmd.get('cmd')} failed: {answer.get('tb') or answer}"
            )
        return answer

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.call(cmd="quit")
                self.proc.wait(20)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


class Stack:
    """Redis + API + workers (+ the engine child), all private to one benchmark run."""

    def __init__(
        self, base: Path, models: dict[str, str], cpu_threads: int = 1, api_processes: int = 1
    ) -> None:
        self.base, self.models, self.cpu_threads = base, models, cpu_threads
        self.api_processes = api_processes  # uvicorn --workers
        self.storage, self.logs = base / "storage", base / "out"
        self.redis_server: RedisServer | None = None
        self.api: ApiProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.child: Child | None = None
        self.env: dict[str, str] = {}

    def conn(self) -> redis.Redis:
        assert self.redis_server is not None
        return redis.Redis(host="127.0.0.1", port=self.redis_server.port, socket_timeout=30)

    def start_redis_and_api(self) -> ApiProcess:
        """Redis with the production config (deploy/redis/redis.conf, AOF on), as serve.sh runs
        it, and the API as production runs it: one process, no access log."""
        self.redis_server = RedisServer(self.base / "redis").start()
        self.storage.mkdir(parents=True, exist_ok=True)
        models = {k: Path(v) for k, v in self.models.items()}
        self.env = service_env(
            self.redis_server.port,
            self.storage,
            models,
            LOG_LEVEL="INFO",
            ASR_CPU_THREADS=str(self.cpu_threads),
            ASR_DEVICE="cpu",
            ASR_BATCH_SIZE="500",
            # One job per recognize call, so figures 2 and 5 measure the service around the
            # engine; the gain from batching is its own figure (batching.py).
            ASR_BATCH_JOBS="1",
            MAX_RECORDINGS="10",
            MAX_HISTORY_RECORDS="10",
            RQ_QUEUE_NAME="asr-queue",
            TASK_TTL_SECONDS="3600",
            CUDA_VISIBLE_DEVICES="",
        )
        args = ("--log-level", "warning", "--workers", str(self.api_processes))
        self.api = ApiProcess(self.env, self.logs / "api.out", args).start()
        return self.api

    def start_workers(self, count: int) -> list[WorkerProcess]:
        start = len(self.workers) + 1
        started = [
            WorkerProcess(f"worker-{i}", self.env, self.logs).start()
            for i in range(start, start + count)
        ]
        self.workers += started
        return started

    def start_child(self) -> Child:
        self.child = Child(self.env, self.logs).start()
        return self.child

    def wait_workers(self, workers: list[WorkerProcess]) -> dict[str, float]:
        """Wait for readiness; returns {name: seconds from now until ready}."""
        t0, took = time.perf_counter(), {}
        for worker in workers:
            worker.wait_ready(self.conn(), timeout=300)
            took[worker.name] = round(time.perf_counter() - t0, 1)
        return took

    def run_jobs(
        self, uploads: list[Upload], clients: int, timeout: float, interval: float = 0.1
    ) -> tuple[list[Submitted], float, dict[str, Finished]]:
        """Submit the uploads, `clients` at a time, and wait until every accepted one is done."""
        assert self.api is not None
        sent, wall = submit_all(self.api.url, uploads, clients)
        ids = [s.task_id for s in sent if s.task_id]
        return sent, wall, wait_all(self.conn(), ids, timeout, interval)

    def stop_worker(self, worker: WorkerProcess) -> None:
        worker.stop()
        self.workers.remove(worker)

    def pids(self) -> list[int]:
        procs = [self.redis_server and self.redis_server.proc, *(w.proc for w in self.workers)]
        pids = [os.getpid(), self.api.pid if self.api else 0, self.child.pid if self.child else 0]
        return [p for p in pids + [proc.pid for proc in procs if proc] if p]

    def api_pids(self) -> list[int]:
        """The API's process and its children (uvicorn's worker processes, when it has them)."""
        if self.api is None:
            return []
        children = Path(f"/proc/{self.api.pid}/task/{self.api.pid}/children")
        return [self.api.pid, *(int(p) for p in children.read_text().split())]

    def redis_pid(self) -> int:
        proc = self.redis_server.proc if self.redis_server else None
        return proc.pid if proc else 0

    def drop_queued(self, timeout: float = 60) -> None:
        """Drop every queued job (the lanes' lists) and wait until no worker is busy: between
        phases that run while workers do (a flush would take the workers' own keys too)."""
        from rq import Worker

        conn = self.conn()
        for key in conn.scan_iter("rq:queue:*"):
            if conn.type(key) == b"list":
                conn.delete(key)
        deadline = time.monotonic() + timeout
        while any(w.get_state() == "busy" for w in Worker.all(connection=conn)):
            if time.monotonic() > deadline:
                raise TimeoutError("workers still busy after the queue was dropped")
            time.sleep(0.1)

    def reset_queue_state(self) -> None:
        """Forget every task, job and recording (between phases that must not see each other)."""
        self.conn().flushdb()
        for path in (self.storage / "recordings").glob("*"):
            path.unlink(missing_ok=True)

    def stop_service(self) -> None:
        """Stop the workers and the API; Redis and the engine child stay."""
        for worker in self.workers:
            try:
                worker.stop(timeout=20)
            except Exception as exc:  # keep tearing down
                log(f"stopping {worker.name}: {exc}")
        self.workers.clear()
        if self.api:
            self.api.stop()
            self.api = None

    def stop(self) -> None:
        if self.child:
            self.child.stop()
            self.child = None
        self.stop_service()
        if self.redis_server:
            self.redis_server.stop()
            self.redis_server = None
