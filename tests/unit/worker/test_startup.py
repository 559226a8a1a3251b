"""src/worker/startup.py: a worker whose engine cannot load says why in Redis and in one log
line, retries with back-off, and is loaded as soon as it can be; on a real Redis, with an engine
loader that needs a file (the system test does it with real models: tests/system/test_first_run.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from src.config import Settings
from src.engine.interface import Engine
from src.worker.startup import StartBeacon, load_when_possible, reason
from tests.support import loudness_engine
from tests.support.processes import wait_for


def load_once_the_file_exists(settings: Settings) -> Engine:
    """An engine loader that fails as a missing model does, until `asr_model` names a file."""
    if not Path(settings.asr_model).is_file():
        raise FileNotFoundError(f"model {settings.asr_model} not found: download it first")
    return loudness_engine.load(settings)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "model.pt"


@pytest.fixture
def waiting_settings(settings: Settings, marker: Path) -> Settings:
    return settings.model_copy(
        update={
            "worker_engine": f"{__name__}:load_once_the_file_exists",
            "asr_model": str(marker),
            "worker_start_retry_seconds": 3.0,
        }
    )


def start_state(conn: redis.Redis, name: str = "worker-1") -> dict | None:
    raw = conn.get(f"asr:worker-start:{name}")
    return json.loads(raw) if raw else None


def test_the_worker_waits_says_why_once_and_loads_when_the_file_appears(
    conn: redis.Redis, waiting_settings: Settings, marker: Path, log_lines: list[str]
):
    beacon = StartBeacon(conn, "worker-1", interval_s=60, ttl_s=15).begin()
    assert start_state(conn)["state"] == "loading"  # type: ignore[index]
    seen: list[tuple[float, dict | None]] = []

    def sleep(delay: float) -> None:
        seen.append((delay, start_state(conn)))
        if len(seen) == 4:
            marker.write_bytes(b"weights")  # scripts/download_models.py finished

    engine = load_when_possible(waiting_settings, "worker-1", beacon, sleep=sleep)

    assert engine.info.models == {"loudness": "rms-dbfs"}
    assert [delay for delay, _ in seen] == [1.0, 2.0, 3.0, 3.0]  # back-off, capped
    for n, (_, state) in enumerate(seen, 1):
        assert state is not None and state["state"] == "failed" and state["attempts"] == n
        assert state["error"] == f"model {marker} not found: download it first"
        assert state["retry_at"] is not None
    warnings = [line for line in log_lines if not line.startswith("DEBUG")]
    assert warnings == [
        f"WARNING worker-1 cannot load its engine: model {marker} not found: download it first "
        "(trying again every 3s at most; no restart needed)"
    ]
    assert conn.zrange("asr:workers:starting", 0, -1) == [b"worker-1"]
    beacon.stop()  # what main() does once the readiness beacon is up
    assert start_state(conn) is None and conn.zcard("asr:workers:starting") == 0


def test_an_interrupt_while_waiting_withdraws_the_start_state(
    conn: redis.Redis, waiting_settings: Settings
):
    beacon = StartBeacon(conn, "worker-1", interval_s=60, ttl_s=15).begin()

    def interrupted(delay: float) -> None:
        assert start_state(conn)["state"] == "failed"  # type: ignore[index]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_when_possible(waiting_settings, "worker-1", beacon, sleep=interrupted)
    assert start_state(conn) is None and not beacon.is_alive()


def test_the_beat_refreshes_the_state_with_its_ttl(conn: redis.Redis):
    beacon = StartBeacon(conn, "worker-1", interval_s=0.05, ttl_s=15).begin()
    try:
        conn.delete("asr:worker-start:worker-1")
        beacon.update(publish=False, state="failed", error="later")
        assert start_state(conn) is None  # not at once: the next beat publishes it

        state = wait_for(lambda: start_state(conn), 5, 0.02, "the beat")
        assert state["error"] == "later"  # type: ignore[index]
        assert 0 < conn.ttl("asr:worker-start:worker-1") <= 15
    finally:
        beacon.stop()


def test_the_reason_is_the_message_with_the_type_when_unexpected():
    assert reason(FileNotFoundError("ASR_MODEL x not found")) == "ASR_MODEL x not found"
    assert reason(TypeError("load() takes 0 arguments")) == "TypeError: load() takes 0 arguments"
    assert reason(RuntimeError()) == "RuntimeError"
