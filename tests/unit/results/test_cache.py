"""The result cache's entries on a real Redis: a hit needs a done record with the same
fingerprint; anything else misses and drops the entry, unless the entry changed meanwhile."""

from __future__ import annotations

import redis

from src.records import task_store
from src.records.redis_client import result_cache_key
from src.results import cache
from src.vocabulary import TaskStatus
from tests.support.records import finished

FP = "f" * 64


def test_a_done_source_with_the_fingerprint_is_a_hit(conn: redis.Redis):
    source = finished(1, fingerprint=FP)
    task_store.save(conn, source)
    cache.remember(conn, FP, source.task_id, ttl_s=60)
    assert 55 < conn.ttl(result_cache_key(FP)) <= 60
    assert cache.lookup(conn, FP) == source


def test_no_entry_is_a_miss(conn: redis.Redis):
    assert cache.lookup(conn, FP) is None


def test_a_source_gone_or_not_done_or_with_another_fingerprint_misses_and_drops_the_entry(
    conn: redis.Redis,
):
    gone = finished(1, fingerprint=FP)
    failed = finished(2, TaskStatus.FAILED, fingerprint=FP)
    queued = finished(3, TaskStatus.QUEUED, fingerprint=FP)
    other = finished(4, fingerprint="0" * 64)
    for record in (failed, queued, other):
        task_store.save(conn, record)
    for record in (gone, failed, queued, other):
        cache.remember(conn, FP, record.task_id, ttl_s=60)
        assert cache.lookup(conn, FP) is None, record.status
        assert conn.get(result_cache_key(FP)) is None


def test_forget_leaves_an_entry_that_names_another_task(conn: redis.Redis):
    cache.remember(conn, FP, finished(2).task_id, ttl_s=60)
    assert cache.forget(conn, FP, finished(1).task_id) is False
    assert conn.get(result_cache_key(FP)) == finished(2).task_id.encode()
    assert cache.forget(conn, FP, finished(2).task_id) is True
