"""Recordings on disk: streaming saves, names, lookup, and the keep-newest-N retention policy.

Files are `storage/recordings/{task_id}.{ext}` where task_id is `YYYY-MM-DD_NNN_<random>`, so the
name carries the day and the day's sequence number. `asr:audio:index` (a sorted set scored by
upload time) says which files exist and in what order; retention trims it from the oldest end but
never removes the recording of a task that is still queued or running. A recording is pinned
while its task waits or runs and released (`asr:audio:released`, same scores) when the job ends:
retention reads only released recordings older than the newest N, so a backlog of queued ones
costs it nothing.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import redis
from redis.client import Pipeline

from src.config import Settings
from src.records.redis_client import (
    AUDIO_INDEX_KEY,
    AUDIO_PINNED_KEY,
    AUDIO_RELEASED_KEY,
    Script,
    decoded,
    task_key,
)
from src.vocabulary import TaskStatus

CHUNK_SIZE = 1024 * 1024

CONTENT_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
    "mp4": "video/mp4",
}


class UploadTooLargeError(ValueError):
    """The upload passed MAX_UPLOAD_BYTES while it was being written."""


class StorageFullError(OSError):
    """The disk filled up while an upload was written."""


def ensure_dirs(settings: Settings) -> None:
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)


def partial_path(settings: Settings, task_id: str) -> Path:
    return settings.recordings_dir / f".{task_id}.part"


def save_stream(
    source: BinaryIO,
    dest: Path,
    max_bytes: int,
    on_chunk: Callable[[bytes], object] | None = None,
) -> int:
    """Copy in chunks (never the whole upload in memory); remove the partial file on any error.

    `on_chunk` sees every chunk as it is written (e.g. a hash's `update`), so a digest of the
    upload costs no second read of the file.
    """
    size = 0
    try:
        with open(dest, "wb") as out:
            while chunk := source.read(CHUNK_SIZE):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLargeError(f"upload exceeds {max_bytes} bytes")
                out.write(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(exc.errno, "no space left for the upload") from exc
        raise
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size


def stored_name(task_id: str, ext: str) -> str:
    """The file name a task's recording is kept under."""
    return f"{task_id}.{ext}"


def finalize(settings: Settings, partial: Path, task_id: str, ext: str) -> str:
    """Give a checked upload its final name; returns the file name."""
    name = stored_name(task_id, ext)
    os.replace(partial, settings.recordings_dir / name)
    return name


def plain_name(name: str) -> bool:
    """Whether `name` is a plain file name (no path, not hidden), as recordings are named."""
    return bool(name) and not (
        "/" in name or "\\" in name or name.startswith(".") or "\x00" in name
    )


def recording_path(settings: Settings, name: str) -> Path | None:
    """Path of a stored recording, only if `name` is a plain file name inside the directory."""
    if not plain_name(name):
        return None
    path = settings.recordings_dir / name
    return path if path.is_file() else None


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")


def index_recording(conn: redis.Redis, name: str, uploaded_at: float | None = None) -> None:
    """Index a new recording, pinned: its task is queued, so retention must keep it."""
    conn.zadd(AUDIO_INDEX_KEY, {name: uploaded_at if uploaded_at is not None else time.time()})
    conn.sadd(AUDIO_PINNED_KEY, name)


def pin(conn: redis.Redis, name: str) -> None:
    """Its task is queued again (retry): keep the recording until the job ends."""
    conn.sadd(AUDIO_PINNED_KEY, name)
    conn.zrem(AUDIO_RELEASED_KEY, name)


# Released with its upload time from the index, in one step: a recording retention already
# removed from the index is not released again.
_RELEASE = """
redis.call('SREM', KEYS[2], ARGV[1])
local uploaded = redis.call('ZSCORE', KEYS[1], ARGV[1])
if uploaded then redis.call('ZADD', KEYS[3], uploaded, ARGV[1]) end
"""


def unpin(conn: redis.Redis, name: str) -> None:
    """Its job ended (done, failed, deleted): retention may now remove the recording."""
    conn.eval(_RELEASE, 3, AUDIO_INDEX_KEY, AUDIO_PINNED_KEY, AUDIO_RELEASED_KEY, name)


def task_id_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def find_in_index(conn: redis.Redis, task_id: str) -> str | None:
    """The recording of a task whose record has expired: look it up in the (small) index."""
    for raw in conn.zrange(AUDIO_INDEX_KEY, 0, -1):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if task_id_of(name) == task_id:
            return name
    return None


# Retention's whole pass in one step (one round trip, atomic): the recordings to remove, taken
# off the index and the released set. Only released recordings older than the newest N are read;
# a tie on the upload time keeps one among the newest N; one whose task is queued or processing
# is kept all the same (a missed pin never costs a job), and so is one whose record cannot be
# read; one already gone from the index leaves the released set too.
# KEYS: the index, the released set; ARGV: N, the task key prefix, the two waiting statuses.
_RETAIN = Script(
    """
local keep = tonumber(ARGV[1])
local surplus = redis.call('ZREVRANGE', KEYS[1], keep, keep, 'WITHSCORES')
local removed = {}
if #surplus == 0 then return removed end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', surplus[2])) do
  local rank = redis.call('ZREVRANK', KEYS[1], name)
  if not rank then
    redis.call('ZREM', KEYS[2], name)
  elseif rank >= keep then
    local raw = redis.call('GET', ARGV[2] .. (string.match(name, '^(.*)%.') or name))
    local waiting = false
    if raw and raw ~= '' then
      local ok, record = pcall(cjson.decode, raw)
      waiting = not ok or type(record) ~= 'table' or record.status == nil
        or record.status == ARGV[3] or record.status == ARGV[4]
    end
    if not waiting then
      redis.call('ZREM', KEYS[1], name)
      redis.call('ZREM', KEYS[2], name)
      table.insert(removed, name)
    end
  end
end
return removed
"""
)


def _retention_call(settings: Settings) -> tuple[list[str], list[object]]:
    waiting = [TaskStatus.QUEUED.value, TaskStatus.PROCESSING.value]
    return [AUDIO_INDEX_KEY, AUDIO_RELEASED_KEY], [settings.max_recordings, task_key(""), *waiting]


def enforce_retention(conn: redis.Redis, settings: Settings) -> list[str]:
    """Delete recordings beyond the newest MAX_RECORDINGS, oldest first; returns what went.

    The script's ZREM decides who deletes a file, so concurrent callers never race on one file.
    A recording whose task is queued or processing is skipped: deleting it would fail an
    accepted job. Only released recordings are read, so the cost does not grow with the
    backlog; the task record is still read for each file about to go, so a missed pin never
    costs a job. One round trip, and the script runs as one step inside Redis.
    """
    keys, args = _retention_call(settings)
    return _remove_files(settings, _RETAIN(conn, keys, args))


def queue_retention(pipe: Pipeline, settings: Settings) -> None:
    """`enforce_retention` as one command of a pipeline run by `run_batch` (a submit's last
    round trip); `retention_done` takes its reply."""
    keys, args = _retention_call(settings)
    _RETAIN.queue(pipe, keys, args)


def retention_done(conn: redis.Redis, settings: Settings, reply: object) -> list[str]:
    """The files of a queued retention pass removed; returns what went."""
    keys, args = _retention_call(settings)
    return _remove_files(settings, _RETAIN.settle(conn, reply, keys, args))


def _remove_files(settings: Settings, names: list[bytes | str]) -> list[str]:
    """Delete the files retention took out of the index (each by the one caller that did)."""
    removed = [decoded(raw) for raw in names]
    for name in removed:
        path = recording_path(settings, name)
        if path is not None:
            path.unlink(missing_ok=True)
    return removed


def release_unpinned(conn: redis.Redis) -> int:
    """Release the indexed recordings that are not pinned and not yet released: those of
    finished tasks, stored by a version without the released set. Each worker runs it at its
    start; a recording released by mistake is still kept while its task waits or runs."""
    with conn.pipeline() as pipe:  # one snapshot of the three
        pipe.zrange(AUDIO_INDEX_KEY, 0, -1, withscores=True)
        pipe.smembers(AUDIO_PINNED_KEY)
        pipe.zrange(AUDIO_RELEASED_KEY, 0, -1)
        indexed, pinned, released = pipe.execute()
    kept = pinned | set(released)
    missing = {name: score for name, score in indexed if name not in kept}
    if missing:
        conn.zadd(AUDIO_RELEASED_KEY, missing)
    return len(missing)


def delete_recording(conn: redis.Redis, settings: Settings, name: str) -> bool:
    conn.zrem(AUDIO_INDEX_KEY, name)
    conn.srem(AUDIO_PINNED_KEY, name)
    conn.zrem(AUDIO_RELEASED_KEY, name)
    path = recording_path(settings, name)
    if path is None:
        return False
    path.unlink(missing_ok=True)
    return True


def directory_size(path: Path) -> int:
    """Bytes used by regular files under `path` (recordings + logs for /stats)."""
    total = 0
    if not path.exists():
        return 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
