"""src/uploads/recordings.py: saving uploads, recordings on disk, their index in Redis, and
retention (keep the newest N, never one whose task is queued or running)."""

from __future__ import annotations

import errno
import hashlib
import io
from pathlib import Path

import pytest
import redis

from src.config import Settings
from src.records import task_store
from src.records.redis_client import (
    AUDIO_INDEX_KEY,
    AUDIO_PINNED_KEY,
    AUDIO_RELEASED_KEY,
    task_key,
)
from src.records.task_store import TaskRecord, utcnow
from src.uploads import recordings
from src.vocabulary import TaskStatus
from tests.support.fixtures import make_settings

TASK_ID = "2026-11-29_001_" + "ab" * 12


# --- saving an upload ------------------------------------------------------------------------


class Source(io.BytesIO):
    """An upload's body that fails with `error` once `good` bytes have been read."""

    def __init__(self, data: bytes, error: BaseException | None = None, good: int = 0) -> None:
        super().__init__(data)
        self.error = error
        self.good = good

    def read(self, size: int | None = -1) -> bytes:
        if self.error is not None and self.tell() >= self.good:
            raise self.error
        return super().read(size)


def test_save_stream_copies_the_upload_in_chunks(tmp_path: Path):
    data = bytes(range(256)) * (recordings.CHUNK_SIZE // 100)  # 2.56 chunks
    dest = tmp_path / "up.part"
    assert recordings.save_stream(io.BytesIO(data), dest, max_bytes=len(data)) == len(data)
    assert dest.read_bytes() == data


def test_save_stream_hashes_what_it_writes_in_the_same_pass(tmp_path: Path):
    data = bytes(range(256)) * (recordings.CHUNK_SIZE // 100)
    digest = hashlib.sha256()
    source = io.BytesIO(data)
    recordings.save_stream(source, tmp_path / "up.part", len(data), digest.update)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert source.read() == b""  # one pass over the upload, no second read


def test_save_stream_refuses_one_byte_over_the_cap_and_keeps_nothing(tmp_path: Path):
    data = b"\x01" * (recordings.CHUNK_SIZE + 10)
    dest = tmp_path / "up.part"
    with pytest.raises(recordings.UploadTooLargeError):
        recordings.save_stream(io.BytesIO(data), dest, max_bytes=len(data) - 1)
    assert not dest.exists()
    assert recordings.save_stream(io.BytesIO(data), dest, max_bytes=len(data)) == len(data)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_save_stream_reports_a_full_disk_and_keeps_nothing(tmp_path: Path, code: int):
    dest = tmp_path / "up.part"
    source = Source(b"\x01" * (2 * recordings.CHUNK_SIZE), OSError(code, "full"), good=1)
    with pytest.raises(recordings.StorageFullError) as caught:
        recordings.save_stream(source, dest, max_bytes=10 * recordings.CHUNK_SIZE)
    assert caught.value.errno == code
    assert not dest.exists()


@pytest.mark.parametrize("error", [OSError(errno.EIO, "I/O error"), KeyboardInterrupt()])
def test_save_stream_passes_other_errors_on_and_keeps_nothing(tmp_path: Path, error: BaseException):
    dest = tmp_path / "up.part"
    source = Source(b"\x01" * (2 * recordings.CHUNK_SIZE), error, good=1)
    with pytest.raises(type(error)) as caught:
        recordings.save_stream(source, dest, max_bytes=10 * recordings.CHUNK_SIZE)
    assert not isinstance(caught.value, recordings.StorageFullError)
    assert not dest.exists()


def test_finalize_gives_the_checked_upload_its_name(settings: Settings):
    recordings.ensure_dirs(settings)
    partial = recordings.partial_path(settings, TASK_ID)
    partial.write_bytes(b"OggS")
    assert recordings.finalize(settings, partial, TASK_ID, "ogg") == f"{TASK_ID}.ogg"
    assert not partial.exists()
    assert (settings.recordings_dir / f"{TASK_ID}.ogg").read_bytes() == b"OggS"


# --- finding a recording -----------------------------------------------------------------------


def test_recording_path_serves_only_plain_names_inside_the_directory(settings: Settings):
    recordings.ensure_dirs(settings)
    (settings.recordings_dir / "a.wav").write_bytes(b"x")
    (settings.recordings_dir / ".b.part").write_bytes(b"x")
    (settings.storage_path / "outside.wav").write_bytes(b"x")
    assert recordings.recording_path(settings, "a.wav") == settings.recordings_dir / "a.wav"
    for name in ["", ".b.part", "../outside.wav", "x/../a.wav", "..\\outside.wav", "a.wav\x00"]:
        assert recordings.recording_path(settings, name) is None, name
    assert recordings.recording_path(settings, "missing.wav") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.OGG", "audio/ogg"), ("a.m4a", "audio/mp4"), ("a.xyz", "application/octet-stream")],
)
def test_content_type_follows_the_stored_extension(name: str, expected: str):
    assert recordings.content_type(name) == expected


def test_a_recording_is_found_by_its_task_id_in_the_index(conn: redis.Redis):
    recordings.index_recording(conn, f"{TASK_ID}.ogg")
    recordings.index_recording(conn, "2026-11-29_002_" + "cd" * 12 + ".wav")
    assert recordings.find_in_index(conn, TASK_ID) == f"{TASK_ID}.ogg"
    assert recordings.find_in_index(conn, "2026-11-29_003_" + "ef" * 12) is None


# --- retention -------------------------------------------------------------------------------


def stored(conn: redis.Redis, settings: Settings, count: int, pinned: bool = False) -> list[str]:
    """`count` recordings on disk and in the index, oldest first, finished unless `pinned`."""
    recordings.ensure_dirs(settings)
    names = [f"2026-11-29_{i:03d}_{i:024x}.wav" for i in range(1, count + 1)]
    for i, name in enumerate(names):
        (settings.recordings_dir / name).write_bytes(b"x")
        recordings.index_recording(conn, name, 1000.0 - count + i)
        if not pinned:
            recordings.unpin(conn, name)
    return names


def on_disk(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.recordings_dir.iterdir())


def test_retention_skips_pinned_recordings_without_reading_their_tasks(
    conn: redis.Redis, storage: Path
):
    settings = make_settings(6379, storage, max_recordings=3)
    settings.recordings_dir.mkdir(parents=True)
    names = [f"2026-11-28_{i:03d}_{'0' * 24}.ogg" for i in range(10)]
    for i, name in enumerate(names):
        (settings.recordings_dir / name).write_bytes(b"x")
        recordings.index_recording(conn, name, float(i))  # pinned: queued
    for name in names[:4]:  # the four oldest finished (no task record left: expired)
        recordings.unpin(conn, name)
    removed = recordings.enforce_retention(conn, settings)
    assert sorted(removed) == names[:4]
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == names[4:]
    recordings.delete_recording(conn, settings, names[5])
    assert not conn.sismember(AUDIO_PINNED_KEY, names[5])


def test_retention_keeps_exactly_the_newest_n(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, max_recordings=3)
    names = stored(conn, settings, 3)
    assert recordings.enforce_retention(conn, settings) == []  # N kept: nothing goes
    assert on_disk(settings) == names
    newest = f"2026-11-29_999_{'f' * 24}.wav"
    (settings.recordings_dir / newest).write_bytes(b"x")
    recordings.index_recording(conn, newest, 2000.0)
    recordings.unpin(conn, newest)
    assert recordings.enforce_retention(conn, settings) == [names[0]]  # N + 1: the oldest goes
    assert on_disk(settings) == sorted([*names[1:], newest])
    assert conn.zcard(AUDIO_INDEX_KEY) == 3


def test_retention_goes_by_upload_time_not_by_name(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, max_recordings=1)
    names = stored(conn, settings, 2)
    conn.zadd(AUDIO_INDEX_KEY, {names[0]: 5000.0})  # the first name was uploaded last
    assert recordings.enforce_retention(conn, settings) == [names[1]]
    assert on_disk(settings) == [names[0]]


def test_a_pinned_recording_is_kept_until_it_is_unpinned(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, max_recordings=1)
    old, new = stored(conn, settings, 2, pinned=True)
    assert conn.sismember(AUDIO_PINNED_KEY, old)
    assert recordings.enforce_retention(conn, settings) == []
    recordings.unpin(conn, old)
    recordings.pin(conn, old)  # a retry queues its task again
    assert recordings.enforce_retention(conn, settings) == []
    recordings.unpin(conn, old)
    assert recordings.enforce_retention(conn, settings) == [old]
    assert on_disk(settings) == [new]


def test_an_unpinned_recording_of_a_queued_task_is_still_kept(conn: redis.Redis, storage: Path):
    """A missed unpin never costs a job: the task record is read before a file goes."""
    settings = make_settings(6379, storage, max_recordings=1)
    old, _ = stored(conn, settings, 2)
    record = TaskRecord(
        task_id=recordings.task_id_of(old), filename="a.wav", file=old, created_at=utcnow()
    )
    task_store.save(conn, record)
    assert recordings.enforce_retention(conn, settings) == []
    task_store.update(conn, record.task_id, status=TaskStatus.PROCESSING)
    assert recordings.enforce_retention(conn, settings) == []
    task_store.update(conn, record.task_id, status=TaskStatus.DONE)
    assert recordings.enforce_retention(conn, settings) == [old]


def test_delete_recording_removes_the_file_the_index_entry_and_the_pin(
    conn: redis.Redis, settings: Settings
):
    (name,) = stored(conn, settings, 1, pinned=True)
    assert recordings.delete_recording(conn, settings, name) is True
    assert on_disk(settings) == []
    assert conn.zscore(AUDIO_INDEX_KEY, name) is None
    assert not conn.sismember(AUDIO_PINNED_KEY, name)
    assert recordings.delete_recording(conn, settings, name) is False


def test_delete_recording_touches_nothing_outside_the_directory(
    conn: redis.Redis, settings: Settings
):
    recordings.ensure_dirs(settings)
    outside = settings.storage_path / "keep.wav"
    outside.write_bytes(b"x")
    assert recordings.delete_recording(conn, settings, "../keep.wav") is False
    assert outside.exists()


def test_directory_size_counts_every_file_below(tmp_path: Path):
    assert recordings.directory_size(tmp_path / "missing") == 0
    (tmp_path / "logs").mkdir()
    (tmp_path / "a.wav").write_bytes(b"x" * 100)
    (tmp_path / "logs" / "api.log").write_bytes(b"y" * 23)
    assert recordings.directory_size(tmp_path) == 123


# --- more of the same, found missing by mutation testing (report/MUTATION.md) ----------------


def test_ensure_dirs_makes_the_whole_tree_and_may_run_again(tmp_path: Path):
    settings = make_settings(6379, tmp_path / "new" / "storage")
    recordings.ensure_dirs(settings)
    recordings.ensure_dirs(settings)  # every process calls it at start: the second is a no-op
    assert settings.recordings_dir.is_dir() and settings.logs_dir.is_dir()


def test_save_stream_never_reads_more_than_a_chunk_at_once(tmp_path: Path):
    class Counting(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.sizes: list[int | None] = []

        def read(self, size: int | None = -1) -> bytes:
            self.sizes.append(size)
            return super().read(size)

    source = Counting(b"\x01" * (3 * recordings.CHUNK_SIZE))
    recordings.save_stream(source, tmp_path / "up.part", max_bytes=4 * recordings.CHUNK_SIZE)
    assert source.sizes and all(s == recordings.CHUNK_SIZE for s in source.sizes)


def test_the_errors_of_save_stream_say_what_happened(tmp_path: Path):
    with pytest.raises(recordings.UploadTooLargeError, match="exceeds 10 bytes"):
        recordings.save_stream(io.BytesIO(b"x" * 11), tmp_path / "a.part", max_bytes=10)
    full = Source(b"x" * 10, OSError(errno.ENOSPC, "full"), good=1)
    with pytest.raises(recordings.StorageFullError) as caught:
        recordings.save_stream(full, tmp_path / "b.part", max_bytes=100)
    assert caught.value.strerror == "no space left for the upload"


def test_save_stream_into_a_missing_directory_raises_the_open_error(tmp_path: Path):
    """Nothing was created, so there is nothing to remove: the caller sees why open failed."""
    dest = tmp_path / "missing" / "up.part"
    with pytest.raises(FileNotFoundError) as caught:
        recordings.save_stream(io.BytesIO(b"x"), dest, max_bytes=10)
    assert caught.value.__context__ is None  # not an error raised while cleaning up


def test_recording_path_refuses_names_that_reach_into_a_subdirectory(settings: Settings):
    recordings.ensure_dirs(settings)
    (settings.recordings_dir / "sub").mkdir()
    (settings.recordings_dir / "sub" / "a.wav").write_bytes(b"x")
    (settings.recordings_dir / "a\\b.wav").write_bytes(b"x")  # a legal file name on Linux
    assert recordings.recording_path(settings, "sub/a.wav") is None
    assert recordings.recording_path(settings, "a\\b.wav") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.b.ogg", "audio/ogg"), ("a.ogg.part", "application/octet-stream"), ("README", None)],
)
def test_content_type_goes_by_the_last_extension_only(name: str, expected: str | None):
    assert recordings.content_type(name) == (expected or "application/octet-stream")


def test_find_in_index_looks_through_the_whole_index(conn: redis.Redis):
    names = [f"2026-11-29_{i:03d}_{i:024x}.wav" for i in range(1, 6)]
    for i, name in enumerate(names):
        recordings.index_recording(conn, name, float(i))
    for name in names:
        assert recordings.find_in_index(conn, recordings.task_id_of(name)) == name


def test_retention_passes_over_a_queued_task_and_still_removes_older_finished_ones(
    conn: redis.Redis, storage: Path
):
    settings = make_settings(6379, storage, max_recordings=1)
    oldest, queued, _newest = stored(conn, settings, 3)
    record = TaskRecord(
        task_id=recordings.task_id_of(queued), filename="a.wav", file=queued, created_at=utcnow()
    )
    task_store.save(conn, record)  # queued, but its pin was missed
    assert recordings.enforce_retention(conn, settings) == [oldest]
    assert queued in on_disk(settings)


class ReadCounting(redis.Redis):
    """A real connection that remembers the longest list any reply held."""

    longest = 0

    def parse_response(self, connection, command_name, **options):  # type: ignore[no-untyped-def]
        reply = super().parse_response(connection, command_name, **options)
        if isinstance(reply, list):
            self.longest = max(self.longest, len(reply))
        return reply


def test_a_backlog_of_queued_recordings_costs_retention_nothing(conn: redis.Redis, storage: Path):
    """It read every name beyond the newest N, pinned or not: with thousands of notes queued,
    each submit paid for all of them. Now it reads only released recordings."""
    settings = make_settings(6379, storage, max_recordings=3)
    finished = stored(conn, settings, 4)  # the oldest four: their jobs have ended
    for i in range(300):  # then a backlog of queued ones, all newer
        recordings.index_recording(conn, f"2026-11-30_{i:03d}_{i:024x}.ogg", 2000.0 + i)
    spy = ReadCounting(port=conn.connection_pool.connection_kwargs["port"])
    assert sorted(recordings.enforce_retention(spy, settings)) == finished
    assert spy.longest <= len(finished)
    assert on_disk(settings) == []
    assert conn.zcard(AUDIO_RELEASED_KEY) == 0


def test_released_recordings_carry_their_upload_time_and_leave_with_a_pin_or_a_delete(
    conn: redis.Redis, settings: Settings
):
    first, second = stored(conn, settings, 2)
    assert conn.zrange(AUDIO_RELEASED_KEY, 0, -1, withscores=True) == [
        (first.encode(), 998.0),
        (second.encode(), 999.0),
    ]
    recordings.pin(conn, first)
    recordings.delete_recording(conn, settings, second)
    assert conn.zcard(AUDIO_RELEASED_KEY) == 0
    conn.zrem(AUDIO_INDEX_KEY, first)  # retention took it meanwhile: not released again
    recordings.unpin(conn, first)
    assert conn.zcard(AUDIO_RELEASED_KEY) == 0


def test_recordings_of_an_earlier_release_are_released_once_at_a_workers_start(
    conn: redis.Redis, storage: Path
):
    """Stored before the released set existed: finished ones (not pinned) are released, and
    retention can remove them; queued ones stay pinned."""
    settings = make_settings(6379, storage, max_recordings=1)
    names = stored(conn, settings, 4)
    recordings.pin(conn, names[1])  # queued
    conn.delete(AUDIO_RELEASED_KEY)  # as an earlier release left Redis
    assert recordings.enforce_retention(conn, settings) == []
    assert recordings.release_unpinned(conn) == 3
    assert recordings.release_unpinned(conn) == 0
    assert recordings.enforce_retention(conn, settings) == [names[0], names[2]]
    assert on_disk(settings) == [names[1], names[3]]


def test_of_recordings_uploaded_at_the_same_time_retention_keeps_the_newest_n(
    conn: redis.Redis, storage: Path
):
    """A tie on the upload time at the N-th place: one of the two is among the newest N."""
    settings = make_settings(6379, storage, max_recordings=1)
    names = stored(conn, settings, 2)
    conn.zadd(AUDIO_INDEX_KEY, dict.fromkeys(names, 500.0))
    conn.zadd(AUDIO_RELEASED_KEY, dict.fromkeys(names, 500.0))
    removed = recordings.enforce_retention(conn, settings)
    assert len(removed) == 1 and on_disk(settings) == sorted(set(names) - set(removed))
    kept = sorted(set(names) - set(removed))
    assert (
        conn.zrange(AUDIO_INDEX_KEY, 0, -1)
        == conn.zrange(AUDIO_RELEASED_KEY, 0, -1)
        == [kept[0].encode()]
    )


def test_a_recording_whose_task_record_cannot_be_read_is_kept(conn: redis.Redis, storage: Path):
    """Retention deletes a file only once it knows the task is not waiting for it."""
    settings = make_settings(6379, storage, max_recordings=1)
    old, _ = stored(conn, settings, 2)
    conn.set(task_key(recordings.task_id_of(old)), b"{not json")
    assert recordings.enforce_retention(conn, settings) == []
    conn.set(task_key(recordings.task_id_of(old)), b'["a list"]')
    assert recordings.enforce_retention(conn, settings) == []
    conn.set(task_key(recordings.task_id_of(old)), b'{"task_id": "no status: queued"}')
    assert recordings.enforce_retention(conn, settings) == []
    assert old in on_disk(settings)


def test_retention_runs_on_a_redis_that_forgot_its_script(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, max_recordings=1)
    old, new = stored(conn, settings, 2)
    conn.script_flush()  # as after a Redis restart
    assert recordings.enforce_retention(conn, settings) == [old]
    assert on_disk(settings) == [new]
