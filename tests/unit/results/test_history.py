"""src/results/history.py: the Redis list of the newest N finished tasks and the JSONL file that
keeps every one, on the tests' private Redis."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import redis

from src.results import history, stats
from src.vocabulary import TaskStatus
from tests.support.records import finished


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_list_is_newest_first_and_trimmed_to_the_maximum(conn: redis.Redis, tmp_path: Path):
    path = tmp_path / "logs" / "asr_history.jsonl"
    tasks = [finished(n) for n in range(1, 6)]
    for task in tasks:
        history.record(conn, path, task, keep=3)
    latest = history.latest(conn, 10)
    assert [e.task_id for e in latest] == [t.task_id for t in reversed(tasks[2:])]
    assert [e.task_id for e in history.latest(conn, 2)] == [tasks[4].task_id, tasks[3].task_id]
    # The file keeps every task, oldest first.
    assert [e["task_id"] for e in jsonl(path)] == [t.task_id for t in tasks]


def test_an_entry_says_success_or_failed_and_what_a_client_needs(conn: redis.Redis, tmp_path: Path):
    path = tmp_path / "h.jsonl"
    done = history.record(conn, path, finished(1), keep=10)
    failed = history.record(
        conn,
        path,
        finished(2, TaskStatus.FAILED, text=None, duration=None, audio_duration=3.25, error="x"),
        keep=10,
    )
    task_id = finished(1).task_id
    line = {
        "task_id": task_id,
        "file": f"{task_id}.ogg",
        "filename": "note 1.ogg",
        "text": "第1条",
        "created_at": "2026-11-29T08:00:00Z",
        "finished_at": "2026-11-29T08:00:01Z",
        "duration": 6.5,
        "status": "success",
        "worker_id": "worker-1",
        "error": None,
        "rtf": None,
        "language": "zh",
        "attempts": 1,
        "cached": False,
        "cached_from": None,
    }
    assert done.model_dump(mode="json") == line
    assert list(jsonl(path)[0]) == list(line)  # the design's order, for jq
    assert failed.status == "failed" and failed.error == "x"
    assert failed.text == ""  # no transcript: an empty text, not null
    assert failed.duration == 3.25  # the upload check's length when recognition gave none
    assert jsonl(path) == [line, failed.model_dump(mode="json")]
    assert history.latest(conn, 10) == [failed, done]


def test_an_unfinished_task_has_no_finished_at():
    assert history.entry_for(finished(1, finished_at=None)).finished_at is None


def test_the_file_keeps_chinese_text_readable_one_line_per_task(conn: redis.Redis, tmp_path: Path):
    path = tmp_path / "h.jsonl"
    history.record(conn, path, finished(1, text="第一行\n第二行"), keep=10)
    raw = path.read_text(encoding="utf-8")
    assert raw.count("\n") == 1 and raw.endswith("\n")
    assert "第一行" in raw and "\\u" not in raw


def test_a_history_line_that_cannot_be_written_is_counted_not_raised(
    conn: redis.Redis, tmp_path: Path
):
    """A full disk must not undo a finished task: the Redis list still gets the entry."""
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the logs directory should be")
    task = finished(1)
    entry = history.record(conn, blocker / "asr_history.jsonl", task, keep=10)
    assert history.latest(conn, 10) == [entry]
    assert stats.read(conn)["history_write_errors"] == 1
    history.record(conn, blocker / "asr_history.jsonl", finished(2), keep=10)
    assert stats.read(conn)["history_write_errors"] == 2


def test_remove_drops_every_entry_of_a_task_from_the_list_only(conn: redis.Redis, tmp_path: Path):
    path = tmp_path / "h.jsonl"
    gone, kept = finished(1), finished(2)
    for task in (gone, kept, gone):  # a retried task has two entries
        history.record(conn, path, task, keep=10)
    assert history.remove(conn, gone.task_id) == 2
    assert [e.task_id for e in history.latest(conn, 10)] == [kept.task_id]
    assert history.remove(conn, gone.task_id) == 0
    assert len(jsonl(path)) == 3  # the file is an append-only record


# --- more of the same, found missing by mutation testing (report/MUTATION.md) ----------------


def test_an_entry_carries_the_real_time_factor(conn: redis.Redis, tmp_path: Path):
    entry = history.record(conn, tmp_path / "h.jsonl", finished(1, rtf=0.042), keep=10)
    assert entry.rtf == 0.042 and jsonl(tmp_path / "h.jsonl")[0]["rtf"] == 0.042


def test_the_file_is_made_with_its_directories_readable_by_all_writable_by_its_owner(
    conn: redis.Redis, tmp_path: Path
):
    path = tmp_path / "new" / "logs" / "asr_history.jsonl"
    history.record(conn, path, finished(1), keep=10)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask


def test_count_is_the_length_of_the_list(conn: redis.Redis, tmp_path: Path):
    assert history.count(conn) == 0
    for n in (1, 2, 3):
        history.record(conn, tmp_path / "h.jsonl", finished(n), keep=2)
    assert history.count(conn) == 2


def test_remove_finds_every_entry_of_a_task_wherever_it_is_in_the_list(
    conn: redis.Redis, tmp_path: Path
):
    path = tmp_path / "h.jsonl"
    gone = finished(1)
    tasks = [gone, finished(2), finished(3), finished(1, attempts=2)]  # its retry: another line
    for task in tasks:
        history.record(conn, path, task, keep=10)
    assert history.remove(conn, gone.task_id) == 2  # the newest entry and the oldest
    assert [e.task_id for e in history.latest(conn, 10)] == [tasks[2].task_id, tasks[1].task_id]


def test_an_answer_from_the_result_cache_says_so_and_names_its_source(
    conn: redis.Redis, tmp_path: Path
):
    path = tmp_path / "asr_history.jsonl"
    source = finished(1)
    hit = finished(2, cached=True, cached_from=source.task_id)
    for record in (source, hit):
        history.record(conn, path, record, 10)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(line["cached"], line["cached_from"]) for line in lines] == [
        (False, None),
        (True, source.task_id),
    ]
    assert history.entry_for(hit).cached and history.entry_for(hit).cached_from == source.task_id


def test_a_worker_on_another_host_sends_its_lines_for_the_api_to_append_once(
    conn: redis.Redis, tmp_path: Path
):
    """No path (WORKER_API_URL set): the line goes to the outbox, in order, and the API host's
    drain appends each once; the recent list is filled at once either way."""
    path = tmp_path / "logs" / "asr_history.jsonl"
    tasks = [finished(n) for n in range(1, 4)]
    for task in tasks:
        history.record(conn, None, task, keep=10)
    assert not path.exists()
    assert [e.task_id for e in history.latest(conn, 10)] == [t.task_id for t in reversed(tasks)]
    assert history.drain_outbox(conn, path, "api-1") == 3
    assert history.drain_outbox(conn, path, "api-1") == 0
    assert [e["task_id"] for e in jsonl(path)] == [t.task_id for t in tasks]


def test_a_drain_that_cannot_write_keeps_the_lines_for_the_next(conn: redis.Redis, tmp_path: Path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the logs directory should be")
    history.record(conn, None, finished(1), keep=10)
    assert history.drain_outbox(conn, blocker / "asr_history.jsonl", "api-1") == 0
    assert stats.read(conn)["history_write_errors"] == 1
    blocker.unlink()
    assert history.drain_outbox(conn, blocker / "asr_history.jsonl", "api-1") == 1


def test_one_api_process_drains_at_a_time(conn: redis.Redis, tmp_path: Path):
    history.record(conn, None, finished(1), keep=10)
    conn.set("asr:history:drain-lock", "api-2", ex=30)  # another API process is draining
    assert history.drain_outbox(conn, tmp_path / "h.jsonl", "api-1") == 0
    conn.delete("asr:history:drain-lock")
    assert history.drain_outbox(conn, tmp_path / "h.jsonl", "api-1") == 1
    assert conn.get("asr:history:drain-lock") is None


def test_a_worker_with_an_api_url_has_no_history_file_of_its_own(tmp_path: Path):
    from src.config import load_settings

    here = load_settings(storage_path=tmp_path)
    assert history.jsonl_path(here) == here.history_file
    remote = load_settings(storage_path=tmp_path, worker_api_url="http://api-box:8000")
    assert history.jsonl_path(remote) is None
