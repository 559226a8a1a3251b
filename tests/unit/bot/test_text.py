"""The bot's own text logic: splitting at Telegram's limit, status lines, history, the file's
idempotency key."""

from __future__ import annotations

from datetime import datetime

import pytest

from src.bot.text import dedup_key, history_text, split_message, status_line, transcript_parts
from src.client import HistoryItem, Task

TASK_ID = "2026-12-01_001_0a1b2c3d4e5f60718293a4b5"


def test_a_short_text_is_one_part():
    assert split_message("你好。") == ["你好。"]
    assert split_message("") == [""]


@pytest.mark.parametrize("length", [4096, 4097, 9000, 20000])
def test_parts_fit_the_limit_and_join_back(length: int):
    text = ("今天开会讨论了三件事。" * 3000)[:length]
    parts = split_message(text)
    assert all(0 < len(p) <= 4096 for p in parts)
    assert "".join(parts) == text
    assert len(parts) == -(-length // 4096) or len(parts) == -(-length // 4096) + 1


def test_a_cut_falls_after_a_sentence_or_word_where_there_is_one():
    text = "a" * 30 + "。" + "b" * 30
    assert split_message(text, limit=40) == ["a" * 30 + "。", "b" * 30]
    words = "word " * 20
    assert all(p.endswith(" ") for p in split_message(words, limit=23)[:-1])


def test_text_without_breaks_is_cut_hard():
    assert split_message("x" * 10, limit=4) == ["xxxx", "xxxx", "xx"]


def test_a_break_near_the_start_does_not_leave_a_sliver():
    parts = split_message("ab " + "c" * 20, limit=10)
    assert parts[0] == "ab " + "c" * 7


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError):
        split_message("x", limit=0)


def test_status_lines_follow_the_task():
    queued = Task(task_id=TASK_ID, status="queued", position=3, estimated_wait=12.4)
    assert status_line(queued) == "⏳ Queued #3, about 12 s"
    processing = Task(task_id=TASK_ID, status="processing", progress=40, stage="recognition")
    assert status_line(processing) == "⚙️ Processing… 40% (recognition)"
    done = Task(task_id=TASK_ID, status="done", duration=4.04, cached=True, text="x")
    assert status_line(done) == "✅ Done: 4.0 s of audio (from the cache)"
    failed = Task(task_id=TASK_ID, status="failed", error="Invalid audio: over the limit")
    assert status_line(failed) == "❌ Failed: Invalid audio: over the limit"


def test_an_empty_transcript_is_said_in_words():
    assert transcript_parts(Task(task_id=TASK_ID, status="done", text="  ")) == [
        "(no speech heard)"
    ]
    long = Task(task_id=TASK_ID, status="done", text="字" * 5000)
    assert [len(p) for p in transcript_parts(long)] == [4096, 904]


def test_history_lines():
    at = datetime(2026, 12, 1, 9, 30)
    items = [
        HistoryItem(task_id="a", status="success", text="好" * 80, duration=4.2, created_at=at),
        HistoryItem(task_id="b", status="failed", error="no speech", cached=False, created_at=at),
    ]
    lines = history_text(items).splitlines()
    assert lines[0] == "12-01 09:30 success 4s: " + "好" * 59 + "…"
    assert lines[1] == "12-01 09:30 failed: no speech"
    assert history_text([]) == "No transcriptions yet."


def test_the_dedup_key_is_the_file_language_and_hotwords():
    key = dedup_key("AgADxyz", "zh", ["张三", "李四"])
    assert key == dedup_key("AgADxyz", "zh", ["李四", "张三"])  # order does not matter
    assert key != dedup_key("AgADxyz", "zh", ["张三"])
    assert key != dedup_key("AgADxyz", "en", ["张三", "李四"])
    assert key != dedup_key("AgADabc", "zh", ["张三", "李四"])
    assert key.startswith("tg-file-") and len(key) <= 255 and key.isascii()
