"""Priority lanes through the ASGI app on a real Redis, without workers: the lane a submit picks
(by `priority`, or by the clip's duration), the place and wait it is shown across the lanes, a
retry's lane, and the queue figures per lane. Real workers taking the lanes are in
tests/system/test_lanes_service.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.config import Settings
from src.queue.job_queue import get_lanes
from src.records import task_store
from src.vocabulary import Priority, TaskStatus
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import result


@pytest.fixture
def lane_settings(settings: Settings) -> Settings:
    """The duration rule on (the other tests put every clip in the normal lane): a 6.6 s voice
    note is high, a 300 s recording is low."""
    return settings.model_copy(update={"lane_high_max_seconds": 60, "lane_low_min_seconds": 200})


@pytest.fixture
def api(lane_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(lane_settings), raise_server_exceptions=False) as client:
        yield client


def post(client: TestClient, path: Path, **form: str) -> dict:
    with open(path, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": (path.name, fh)}, data=form)
    assert resp.status_code == 200, resp.text
    return resp.json()


def waiting(conn: redis.Redis, settings: Settings) -> dict[str, list[str]]:
    return {p.value: q.get_job_ids() for p, q in get_lanes(conn, settings).queues.items()}


def test_the_duration_picks_the_lane_and_the_place_counts_higher_lanes_ahead(
    api: TestClient, conn: redis.Redis, lane_settings: Settings, long_clip: Path
):
    long_one = post(api, long_clip)
    note = post(api, SPEECH_WAV)
    assert (long_one["priority"], long_one["position"]) == ("low", 1)
    assert (note["priority"], note["position"]) == ("high", 1)  # it goes first
    assert waiting(conn, lane_settings) == {
        "high": [note["task_id"]],
        "normal": [],
        "low": [long_one["task_id"]],
    }
    body = result(api, long_one["task_id"])
    assert (body["status"], body["position"], body["priority"]) == ("queued", 2, "low")
    assert result(api, note["task_id"])["position"] == 1
    status = api.get("/api/v1/asr/queue/status").json()
    assert status["queued"] == 2 and status["lanes"] == {"high": 1, "normal": 0, "low": 1}
    metrics = api.get("/metrics").text
    assert 'asr_queue_depth{lane="high"} 1.0' in metrics
    assert 'asr_queue_depth{lane="low"} 1.0' in metrics


def test_submits_priority_wins_over_the_duration(
    api: TestClient, conn: redis.Redis, lane_settings: Settings
):
    low = post(api, SPEECH_WAV, priority="low")
    normal = post(api, SPEECH_WAV, priority="normal")
    assert [low["priority"], normal["priority"]] == ["low", "normal"]
    assert waiting(conn, lane_settings)["low"] == [low["task_id"]]
    record = task_store.load(conn, low["task_id"])
    assert record is not None and record.priority == Priority.LOW


@pytest.mark.parametrize("value", ["urgent", "HIGH", "0"])
def test_an_unknown_priority_is_a_422_that_names_the_field(api: TestClient, value: str):
    with open(SPEECH_WAV, "rb") as fh:
        resp = api.post("/api/v1/asr/submit", files={"audio": fh}, data={"priority": value})
    assert resp.status_code == 422, resp.text
    assert "priority" in resp.text


def test_a_retry_goes_back_to_its_own_lane(
    api: TestClient, conn: redis.Redis, lane_settings: Settings
):
    task_id = post(api, SPEECH_WAV, priority="low")["task_id"]
    lanes = get_lanes(conn, lane_settings)
    conn.lrem(lanes[Priority.LOW].key, 1, task_id)  # a worker took it, and it failed
    task_store.update(conn, task_id, status=TaskStatus.FAILED, error="boom")
    resp = api.post(f"/api/v1/asr/retry/{task_id}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["priority"] == "low"
    assert waiting(conn, lane_settings)["low"] == [task_id]
