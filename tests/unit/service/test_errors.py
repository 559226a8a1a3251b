"""The service raises domain errors and the API alone picks their status: an error class left out
of the table would answer a bare 500, so every one must be in it."""

from __future__ import annotations

import inspect
import json

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.errors import SERVICE_ERROR_STATUS
from src.config import Settings
from src.records import task_store
from src.records.task_store import TaskStatus
from src.service import errors
from src.uploads import recordings
from src.uploads.recordings import StorageFullError
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import submit


def domain_errors() -> list[type[errors.ServiceError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError
    ]


def test_every_domain_error_has_a_status():
    assert domain_errors()
    assert set(domain_errors()) == set(SERVICE_ERROR_STATUS)


def test_a_domain_error_keeps_its_context_keys_in_body_order():
    exc = errors.TaskNotFailed(task_id="t1", status="done")
    assert str(exc) == "Only a failed task can be retried"
    assert json.dumps({"error": str(exc), **exc.context()}) == (
        '{"error": "Only a failed task can be retried", "task_id": "t1", "status": "done"}'
    )


def test_audio_too_long_reads_as_the_decoders_sentence():
    exc = errors.AudioTooLong("audio is 700.0 s long; the limit is 600 s")
    assert str(exc) == "audio is 700.0 s long; the limit is 600 s"
    assert exc.context() == {"reason": "too_long"}
    assert errors.StorageFull().context() == {}


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
