"""src/service/submit.py: a typed request in, a typed answer out, nothing left behind on refusal."""

from __future__ import annotations

import io

import pytest
import redis

from src.config import Settings
from src.queue.job_queue import get_lanes, get_queue
from src.records import task_store
from src.service.errors import InvalidAudio, UnsupportedLanguage
from src.service.models import SubmitRequest
from src.service.submit import display_name, submit
from tests.support.audio_samples import SPEECH_WAV


def request(data: bytes, filename: str | None = "note.wav", language: str = "zh") -> SubmitRequest:
    return SubmitRequest(
        upload=io.BytesIO(data),
        filename=filename,
        language=language,
        batch_size=300,
        hotwords=["魔搭"],
    )


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\a\\voice.ogg", "voice.ogg"),
        ("bad\nname.wav", "badname.wav"),
        ("..", "upload"),
        (None, "upload"),
    ],
)
def test_the_display_name_has_no_directories_or_control_characters(
    sent: str | None, shown: str
) -> None:
    assert display_name(sent) == shown


def test_an_accepted_upload_is_stored_recorded_and_queued(
    conn: redis.Redis, settings: Settings
) -> None:
    queue = get_queue(conn, settings)
    answer = submit(conn, get_lanes(conn, settings), settings, request(SPEECH_WAV.read_bytes()))

    assert answer.position == 1 and answer.status.value == "queued"
    assert answer.size == SPEECH_WAV.stat().st_size and answer.filename == "note.wav"
    assert answer.log_line().startswith(f"task={answer.task_id} file=note.wav size=")
    assert "filename" not in answer.model_dump()  # the log's fields stay out of the answer
    record = task_store.load(conn, answer.task_id)
    assert record is not None and record.batch_size == 300 and record.hotwords == ["魔搭"]
    assert (settings.recordings_dir / record.file).read_bytes() == SPEECH_WAV.read_bytes()
    assert queue.job_ids == [answer.task_id]


def test_refusals_leave_no_file_task_or_job(conn: redis.Redis, settings: Settings) -> None:
    queue = get_queue(conn, settings)
    lanes = get_lanes(conn, settings)
    with pytest.raises(UnsupportedLanguage):
        submit(conn, lanes, settings, request(SPEECH_WAV.read_bytes(), language="xx"))
    with pytest.raises(InvalidAudio):
        submit(conn, lanes, settings, request(b"not audio at all" * 100))
    assert queue.job_ids == []
    assert list(settings.recordings_dir.iterdir()) == []
    assert not [k for k in conn.scan_iter("asr:task:*")]
