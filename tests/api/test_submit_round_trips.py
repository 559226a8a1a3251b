"""What one submit costs in Redis, counted on the real app against a real Redis: its round
trips, each some tens of microseconds of the API's CPU (report/PERFORMANCE.md, target 1c).

The steady state is set up for the count: workers ready, recent jobs timed, the lanes' backlog
counted, more recordings than MAX_RECORDINGS with a finished one for retention to remove, and
the result cache on (a miss), so every read of the submit path does its full work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.config import Settings
from src.media.audio import probe
from src.queue import job_queue
from src.records import task_store
from src.records.redis_client import AUDIO_INDEX_KEY, READY_WORKERS_KEY, api_connection
from src.results import stats
from src.uploads import recordings
from src.vocabulary import Priority, TaskStatus
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV
from tests.support.fixtures import make_settings, submit
from tests.support.processes import RedisServer
from tests.support.round_trips import Tally, count_on

# The task id (MULTI INCR EXPIRE EXEC), the result cache (GET), the task and its job
# (MULTI/EXEC), and one pipeline: retention's script, the place in line, the ready workers'
# script and the wait estimate's two figures. It was 14 before they were merged.
SUBMIT_ROUND_TRIPS = 4
KEPT = 2  # MAX_RECORDINGS


@pytest.fixture
def cached_settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return make_settings(
        redis_server.port, storage, result_cache_seconds=86400, max_recordings=KEPT
    )


@pytest.fixture
def counted(cached_settings: Settings) -> Iterator[tuple[TestClient, Tally]]:
    """The app with its routes on a client that counts (the lifespan's own tasks keep theirs)."""
    with TestClient(create_app(cached_settings), raise_server_exceptions=False) as client:
        conn = api_connection(cached_settings)
        tally = count_on(conn)
        client.app.state.redis = conn  # type: ignore[attr-defined]
        yield client, tally
        conn.close()


def post(client: TestClient) -> dict[str, object]:
    with open(SPEECH_OGG, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": ("note.ogg", fh)})
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


def steady_state(client: TestClient, conn: redis.Redis, settings: Settings) -> list[str]:
    """Two ready workers (and one whose beacon expired), timed jobs, a counted backlog, and
    KEPT + 1 recordings of which the oldest is finished and released: the next submit's
    retention removes it and passes over the next one, beyond the newest KEPT but queued."""
    for name in ("worker-1", "worker-2"):
        job_queue.publish_readiness(conn, name, json.dumps({"name": name}), 60)
    conn.zadd(READY_WORKERS_KEY, {"worker-gone": 1e10})  # in the index, its beacon expired
    for _ in range(3):
        stats.record_job(conn, busy_seconds=50.0, audio_seconds=5.0)  # 10 s per audio second
    ids = [submit(client, SPEECH_WAV) for _ in range(KEPT + 1)]
    lanes = job_queue.get_lanes(conn, settings)
    lanes[Priority.NORMAL].remove(ids[0])  # taken by a worker and done
    record = task_store.update(conn, ids[0], status=TaskStatus.DONE)
    assert record is not None
    recordings.unpin(conn, record.file)
    job_queue.refresh_backlog(conn, lanes)
    return ids


def test_a_submit_costs_four_round_trips(
    counted: tuple[TestClient, Tally], conn: redis.Redis, cached_settings: Settings
):
    client, tally = counted
    done, queued, _ = steady_state(client, conn, cached_settings)
    tally.reset()

    body = post(client)

    assert tally.round_trips == SUBMIT_ROUND_TRIPS, tally.commands
    assert (body["status"], body["position"], body["priority"]) == ("queued", 3, "normal")
    # Two ready workers, two jobs of the counted backlog ahead: as the standalone estimate says.
    audio = probe(SPEECH_OGG).duration_s
    assert body["estimated_wait"] == job_queue.estimated_wait(conn, {Priority.NORMAL: 2}, 2, audio)
    assert body["estimated_wait"] > job_queue.estimated_wait(conn, {Priority.NORMAL: 2}, 3, audio)
    # Retention did its work within them: the finished recording went, the queued one stayed.
    assert conn.zscore(AUDIO_INDEX_KEY, f"{done}.wav") is None
    assert not (cached_settings.recordings_dir / f"{done}.wav").exists()
    assert conn.zscore(AUDIO_INDEX_KEY, f"{queued}.wav") is not None
    assert (cached_settings.recordings_dir / f"{queued}.wav").exists()


def test_a_queued_tasks_result_costs_two_round_trips(
    counted: tuple[TestClient, Tally], conn: redis.Redis, cached_settings: Settings
):
    """Its record, then its place and its wait estimate's figures together."""
    client, tally = counted
    steady_state(client, conn, cached_settings)
    answer = post(client)
    tally.reset()

    body = client.get(f"/api/v1/asr/result/{answer['task_id']}").json()

    assert tally.round_trips == 2, tally.commands
    assert (body["status"], body["position"], body["priority"]) == ("queued", 3, "normal")
    assert body["estimated_wait"] == answer["estimated_wait"]


def test_after_redis_forgot_its_scripts_a_submit_sends_them_once_more(
    counted: tuple[TestClient, Tally], conn: redis.Redis, cached_settings: Settings
):
    """A restarted Redis has no scripts: each of the two is run by its body once (EVAL)."""
    client, tally = counted
    done, queued, _ = steady_state(client, conn, cached_settings)
    conn.script_flush()
    tally.reset()

    body = post(client)

    assert tally.round_trips == SUBMIT_ROUND_TRIPS + 2, tally.commands
    assert tally.commands.count("EVAL") == 2
    assert (body["status"], body["position"]) == ("queued", 3)
    assert conn.zscore(AUDIO_INDEX_KEY, f"{done}.wav") is None
    assert conn.zscore(AUDIO_INDEX_KEY, f"{queued}.wav") is not None
    tally.reset()
    assert post(client)["position"] == 4
    assert tally.round_trips == SUBMIT_ROUND_TRIPS
