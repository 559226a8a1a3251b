"""The service under test, as real processes: a private redis-server, uvicorn, RQ workers.

Also the engine child (scripts/bench/child.py) and the audio clips. Model directories are the
randomly initialised FunASR dirs of tests/support/tiny_models.py (tiny for the service, the real
Paraformer-zh dimensions for the engine figure), cached under tests/.cache/models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from scripts.bench.common import CHILD_PREFIX, ROOT, log
from tests.support.audio_samples import SPEECH_WAV, encode_audio, read_wav
from tests.support.processes import ApiProcess, RedisServer, WorkerProcess, service_env

MODEL_CACHE = ROOT / "tests" / ".cache" / "models"


# --- clips ----------------------------------------------------------------------------------------


def voice_note(seconds: float, dest_dir: Path) -> Path:
    """The committed speech fixture looped to `seconds`, as a Telegram-like OGG/Opus voice note
    (48 kHz, 24 kbit/s, as tests/support/audio_samples.py encodes it); cached in `dest_dir`."""
    dest = dest_dir / f"voice_{seconds:g}s.ogg"
    if dest.exists():
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    samples, rate = read_wav(SPEECH_WAV)
    looped = np.tile(samples, int(np.ceil(seconds * rate / len(samples))))[: round(seconds * rate)]
    tmp = dest.with_name(f".{dest.name}.part")
    options = {"b": "24000", "application": "audio"}
    encode_audio(
        looped, rate, tmp, container="ogg", codec="libopus", out_rate=48000, codec_options=options
    )
    os.replace(tmp, dest)
    return dest


def seeded_lengths(n: int, lo: int, hi: int, seed: int) -> list[int]:
    """n whole-second lengths in [lo, hi], reproducible."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(lo, hi + 1, size=n)]


# --- model dirs -----------------------------------------------------------------------------------


def model_dirs(size: str, cache: Path = MODEL_CACHE) -> dict[str, str]:
    """Build (or reuse) the random-weight model dirs; returns {'asr','vad','punc'} paths."""
    from tests.support.tiny_models import build_model_dirs

    t0 = time.perf_counter()
    dirs = build_model_dirs(cache, size=size)  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    if took > 1:
        log(f"built the {size} model dirs in {took:.0f}s under {cache}")
    return {"asr": str(dirs.asr), "vad": str(dirs.vad), "punc": str(dirs.punc)}


# --- processes ------------------------------------------------------------------------------------


class Child:
    """The engine child process (scripts/bench/child.py), one JSON line per command."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_path = log_dir / "engine-child.err"
        self.proc: subprocess.Popen[str] | None = None
        self.hello: dict[str, Any] = {}

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        err = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench.child"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        err.close()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(CHILD_PREFIX):
                return json.loads(line[len(CHILD_PREFIX) :])
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"engine child exited ({self.proc.poll()}): {tail}")

    def wait_ready(self) -> dict[str, Any]:
        self.hello = self._read()
        return self.hello

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if not answer.get("ok"):
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


@dataclass
class Stack:
    """Redis + API + workers (+ the engine child), all private to one benchmark run."""

    base: Path
    models: dict[str, str]
    cpu_threads: int = 1
    redis_server: RedisServer | None = None
    api: ApiProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    child: Child | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    @property
    def logs(self) -> Path:
        return self.base / "out"

    def conn(self) -> redis.Redis:
        assert self.redis_server is not None
        return redis.Redis(host="127.0.0.1", port=self.redis_server.port, socket_timeout=30)

    def start_redis_and_api(self) -> None:
        # The production config (deploy/redis/redis.conf) with AOF on, as serve.sh runs it.
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
        # As production runs it: one process, no access log.
        self.api = ApiProcess(self.env, self.logs / "api.out", ("--log-level", "warning")).start()

    def start_workers(self, count: int) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            name = f"worker-{len(self.workers) + 1}"
            worker = WorkerProcess(name, self.env, self.logs).start()
            self.workers.append(worker)
            started.append(worker)
        return started

    def start_child(self) -> Child:
        self.child = Child(self.env, self.logs).start()
        return self.child

    def wait_workers(self, workers: list[WorkerProcess]) -> dict[str, float]:
        """Wait for readiness; returns {name: seconds from now until ready} (for the log)."""
        t0 = time.perf_counter()
        took = {}
        for worker in workers:
            worker.wait_ready(self.conn(), timeout=300)
            took[worker.name] = round(time.perf_counter() - t0, 1)
        return took

    def stop_worker(self, worker: WorkerProcess) -> None:
        worker.stop()
        self.workers.remove(worker)

    def pids(self) -> list[int]:
        pids = [os.getpid()]
        if self.redis_server and self.redis_server.proc:
            pids.append(self.redis_server.proc.pid)
        if self.api:
            pids.append(self.api.pid)
        pids += [w.proc.pid for w in self.workers if w.proc]
        if self.child:
            pids.append(self.child.pid)
        return pids

    def reset_queue_state(self) -> None:
        """Forget every task, job and recording (between phases that must not see each other)."""
        self.conn().flushdb()
        recordings = self.storage / "recordings"
        if recordings.is_dir():
            for path in recordings.iterdir():
                path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.child:
            self.child.stop()
            self.child = None
        for worker in list(self.workers):
            try:
                worker.stop(timeout=20)
            except Exception as exc:  # keep tearing down
                log(f"stopping {worker.name}: {exc}")
        self.workers.clear()
        if self.api:
            self.api.stop()
            self.api = None
        if self.redis_server:
            self.redis_server.stop()
            self.redis_server = None
