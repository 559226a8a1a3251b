"""Domain errors as a client gets them: the status the API picks and the exact body, for the
two that no other fast API test reaches."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient

from src.config import Settings
from src.records import task_store
from src.records.task_store import TaskStatus
from src.uploads import recordings
from src.uploads.recordings import StorageFullError
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import submit


def test_retry_whose_recording_is_gone_is_410(
    client: TestClient, conn: redis.Redis, settings: Settings
):
    """The one domain error no other fast test reaches: retention removed the file first."""
    task_id = submit(client, SPEECH_WAV)
    task_store.update(conn, task_id, status=TaskStatus.FAILED, error="boom")
    for path in settings.recordings_dir.iterdir():
        path.unlink()
    resp = client.post(f"/api/v1/asr/retry/{task_id}")
    assert resp.status_code == 410
    assert (
        resp.content
        == json.dumps(
            {"error": "The recording is no longer stored; submit it again", "task_id": task_id},
            separators=(",", ":"),
        ).encode()
    )


def test_a_full_disk_during_an_upload_is_507(client: TestClient, monkeypatch: pytest.MonkeyPatch):
    """The real fault (a full tmpfs) is in the slow tests; this pins the body in the fast tier."""

    def full(*_: object) -> int:
        raise StorageFullError("no space left on device")

    monkeypatch.setattr(recordings, "save_stream", full)
    with open(SPEECH_WAV, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": ("a.wav", fh)})
    assert resp.status_code == 507
    assert resp.json() == {"error": "Insufficient storage: the server's disk is full"}
