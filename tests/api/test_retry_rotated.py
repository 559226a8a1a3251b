"""A retry whose recording retention rotated out gets 410: the whole path, from the submit that
pushed the failed task's recording past MAX_RECORDINGS to the retry that can no longer run."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.queue import job_queue, recovery
from src.records.redis_client import AUDIO_INDEX_KEY
from src.uploads import recordings
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings, submit
from tests.support.processes import RedisServer


def test_a_retry_after_retention_rotated_the_recording_out_is_410(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
) -> None:
    settings = make_settings(redis_server.port, storage, max_recordings=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = submit(client, SPEECH_WAV)
        queue_key = job_queue.get_queue(conn, settings).key
        conn.lrem(queue_key, 1, first)  # a worker took it, and it failed:
        recovery.mark_failed(conn, settings, first, "boom", reason="other")  # (unpins it)
        second = submit(client, SPEECH_WAV)  # one recording kept: the first one goes
        assert recordings.find_in_index(conn, first) is None
        assert [p.stem for p in settings.recordings_dir.iterdir()] == [second]
        assert conn.zcard(AUDIO_INDEX_KEY) == 1

        resp = client.post(f"/api/v1/asr/retry/{first}")
    assert resp.status_code == 410, resp.text
    assert resp.json() == {
        "error": "The recording is no longer stored; submit it again",
        "task_id": first,
    }
    assert conn.lrange(queue_key, 0, -1) == [second.encode()]  # not queued again
