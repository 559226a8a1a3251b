"""Shared pytest fixtures: a private Redis, settings pointing at it, the ASGI app, workers."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from loguru import logger

from src.api.main import create_app
from src.config import Settings
from tests.support.audio_samples import SPEECH_WAV, make_long
from tests.support.processes import RedisServer, WorkerProcess, service_env, wait_for
from tests.support.tiny_models import ModelDirs


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port (the machine's Redis stays untouched)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def make_settings(port: int, storage: Path, **overrides: object) -> Settings:
    """Settings for a test's service. The result cache is off unless a test turns it on: the
    tests submit the same few samples again and again and mean the workers to transcribe each
    (tests/api/test_result_cache.py is where it is on). Every clip goes to the normal lane
    unless a test turns the duration rule on (tests of lanes do): the tests read that queue."""
    values: dict[str, object] = {
        "redis_host": "127.0.0.1",
        "redis_port": port,
        "redis_db": 0,
        "redis_url": None,
        "redis_password": None,
        "storage_path": storage,
        "log_level": "DEBUG",
        "asr_hotwords_path": storage / "hotwords.txt",
        "result_cache_seconds": 0,
        "lane_high_max_seconds": 0,
        "lane_low_min_seconds": 1e9,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture
def conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A clean database for each API-level test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.flushall()


@pytest.fixture
def settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return make_settings(redis_server.port, storage)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


class Service:
    """A running service: private Redis, two real worker processes, settings for the ASGI app."""

    def __init__(self, redis_server: RedisServer, storage: Path, workers: list[WorkerProcess]):
        self.redis_server = redis_server
        self.storage = storage
        self.workers = workers
        self.settings = make_settings(redis_server.port, storage)

    def app_client(self) -> TestClient:
        return TestClient(create_app(self.settings), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, model_dirs: object) -> Iterator[Service]:
    """Two workers (worker-1, worker-2) on their own Redis, started once for the session."""
    base = tmp_path_factory.mktemp("service")
    server = RedisServer(base / "redis").start()
    storage = base / "storage"
    storage.mkdir()
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}  # type: ignore[attr-defined]
    env = service_env(server.port, storage, models)
    workers = [WorkerProcess(f"worker-{i}", env, base / "out").start() for i in (1, 2)]
    try:
        for worker in workers:
            worker.wait_ready(server.client())
        yield Service(server, storage, workers)
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)


class Env:
    """A private Redis, storage and worker environment for this module's fault tests."""

    def __init__(self, base: Path, models: ModelDirs) -> None:
        self.base = base
        self.redis = RedisServer(base / "redis").start()
        self.storage = base / "storage"
        self.storage.mkdir()
        self.models = {"asr": models.asr, "vad": models.vad, "punc": models.punc}
        self.workers: list[WorkerProcess] = []

    def env(self, **extra: str) -> dict[str, str]:
        return service_env(self.redis.port, self.storage, self.models, **extra)

    def settings(self, **overrides: object) -> Settings:
        return make_settings(self.redis.port, self.storage, **overrides)

    def conn(self) -> redis.Redis:
        return self.redis.client()

    def worker(self, name: str, **extra: str) -> WorkerProcess:
        worker = WorkerProcess(name, self.env(**extra), self.base / "out").start()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(10)
        self.redis.stop()


@pytest.fixture(scope="module")
def fenv(tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs) -> Iterator[Env]:
    """A private Redis and storage for one module of fault tests."""
    env = Env(tmp_path_factory.mktemp("faults"), model_dirs)
    yield env
    env.close()


@pytest.fixture
def stop_workers(fenv: Env) -> Iterator[None]:
    """Each fault test starts the workers it needs; none outlives it, pass or fail, and a test
    that stopped Redis leaves it running again."""
    yield
    for worker in fenv.workers:
        worker.stop(10)
    fenv.workers.clear()
    if fenv.redis.proc is None:
        fenv.redis.start()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 s of speech as FLAC: about 5 s of work for a worker on the tiny models."""
    return make_long(SPEECH_WAV, tmp_path_factory.mktemp("clips"), seconds=300, fmt="flac")


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount` (created), to fill the disk for real; skips without root."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """What this process logs through loguru from here on, as "LEVEL message" lines."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"))
    yield lines
    logger.remove(sink)


def submit(client: TestClient, path: Path) -> str:
    with open(path, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": (path.name, fh)})
    assert resp.status_code == 200, resp.text
    return resp.json()["task_id"]


def result(client: TestClient, task_id: str) -> dict[str, Any]:
    return client.get(f"/api/v1/asr/result/{task_id}").json()


def wait_status(client: TestClient, task_id: str, statuses: set[str], timeout: float) -> dict:
    def check() -> dict | None:
        body = result(client, task_id)
        return body if body["status"] in statuses else None

    return wait_for(check, timeout, 0.05, f"{task_id} in {statuses}")  # type: ignore[return-value]


def history_lines(settings: Settings, task_id: str) -> list[dict[str, Any]]:
    if not settings.history_file.exists():
        return []
    lines = [json.loads(x) for x in settings.history_file.read_text().splitlines()]
    return [x for x in lines if x["task_id"] == task_id]
