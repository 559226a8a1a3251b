"""The result cache: a fingerprint of an upload (its bytes, options and models) -> the done task
that holds its transcript, `asr:cache:{fingerprint}`.

The entry names a task rather than holding a copy of the result, so that deleting or expiring
the task is all it takes to stop serving its transcript: a lookup loads the task's record and
misses, dropping the entry, when the record is gone or no longer done. Only a worker's success
path writes an entry (`remember`), so nothing but a finished transcription is ever served.
What goes into the fingerprint is the submit use case's business (src/service/dedup.py).
"""

from __future__ import annotations

import redis

from src.records import task_store
from src.records.redis_client import decoded, result_cache_key
from src.records.task_store import TaskRecord
from src.vocabulary import TaskStatus

# Delete the entry only if it still names the task found wanting: a worker may have pointed it
# at a fresh transcription meanwhile, and that one must stay.
_FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def remember(conn: redis.Redis, fingerprint: str, task_id: str, ttl_s: int) -> None:
    """Point the fingerprint at a task that is now done, for `ttl_s` seconds."""
    conn.set(result_cache_key(fingerprint), task_id, ex=ttl_s)


def lookup(conn: redis.Redis, fingerprint: str) -> TaskRecord | None:
    """The done task whose transcript answers this fingerprint, or None (a miss)."""
    key = result_cache_key(fingerprint)
    raw = conn.get(key)
    if raw is None:
        return None
    task_id = decoded(raw)
    source = task_store.load(conn, task_id)
    if source is None or source.status != TaskStatus.DONE or source.fingerprint != fingerprint:
        forget(conn, fingerprint, task_id)  # deleted or expired
        return None
    return source


def forget(conn: redis.Redis, fingerprint: str, task_id: str) -> bool:
    """Drop the entry if it still names `task_id`; True when it did."""
    return bool(conn.eval(_FORGET, 1, result_cache_key(fingerprint), task_id))
