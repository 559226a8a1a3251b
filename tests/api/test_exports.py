"""`GET /api/v1/asr/result/{task_id}?format=...`: a done task's transcript as a UTF-8 file with its
media type; a task without a transcript is a 409 that names its status."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from src.records import task_store
from src.records.task_store import TaskRecord, utcnow
from src.vocabulary import Sentence, TaskStatus
from tests.support.subtitles import assert_in_time_order, parse_srt, parse_vtt

TASK_ID = "2025-12-01_001_0a1b2c3d4e5f60718293a4b5"
SENTENCES = [
    Sentence(text="今天天气很好。", start=380, end=3100),
    Sentence(text="Café & <b>bold</b> claims.", start=3500, end=6020),
]


def seed(conn: redis.Redis, status: TaskStatus) -> None:
    record = TaskRecord(
        task_id=TASK_ID,
        status=status,
        filename="voice.ogg",
        file=f"{TASK_ID}.ogg",
        created_at=utcnow(),
        text="".join(s.text for s in SENTENCES) if status == TaskStatus.DONE else None,
        duration=6.6,
        sentences=SENTENCES if status == TaskStatus.DONE else [],
        error="boom" if status == TaskStatus.FAILED else None,
    )
    task_store.save(conn, record)


def export(client: TestClient, fmt: str):
    return client.get(f"/api/v1/asr/result/{TASK_ID}", params={"format": fmt})


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("srt", "application/x-subrip; charset=utf-8"),
        ("vtt", "text/vtt; charset=utf-8"),
        ("txt", "text/plain; charset=utf-8"),
    ],
)
def test_a_done_task_exports_as_a_utf8_file(
    client: TestClient, conn: redis.Redis, fmt: str, media_type: str
):
    seed(conn, TaskStatus.DONE)
    resp = export(client, fmt)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == media_type
    assert resp.headers["content-disposition"] == f'inline; filename="{TASK_ID}.{fmt}"'
    text = resp.content.decode("utf-8")  # strict: raises on anything but UTF-8
    if fmt == "txt":
        assert text == "今天天气很好。Café & <b>bold</b> claims.\n"
        return
    cues = parse_srt(text) if fmt == "srt" else parse_vtt(text)
    assert_in_time_order(cues)
    assert [(c.start_ms, c.end_ms, c.text) for c in cues] == [
        (s.start, s.end, s.text) for s in SENTENCES
    ]


def test_json_is_the_state_as_before(client: TestClient, conn: redis.Redis):
    seed(conn, TaskStatus.DONE)
    plain = client.get(f"/api/v1/asr/result/{TASK_ID}")
    resp = export(client, "json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == plain.json()
    assert resp.json()["sentences"] == [s.model_dump() for s in SENTENCES]


@pytest.mark.parametrize("status", [TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.FAILED])
def test_a_task_without_a_transcript_is_409_with_its_status(
    client: TestClient, conn: redis.Redis, status: TaskStatus
):
    seed(conn, status)
    resp = export(client, "srt")
    assert resp.status_code == 409
    assert resp.json() == {
        "error": "The task has no transcript yet; only a done task can be exported",
        "task_id": TASK_ID,
        "status": status.value,
    }
    assert export(client, "json").status_code == 200  # its state is still there


def test_an_unknown_task_or_format_is_refused(client: TestClient, conn: redis.Redis):
    resp = export(client, "vtt")
    assert resp.status_code == 404 and resp.json()["error"] == "Task not found"
    seed(conn, TaskStatus.DONE)
    resp = export(client, "docx")
    assert resp.status_code == 422
    assert resp.json()["details"][0]["field"] == "query.format"
