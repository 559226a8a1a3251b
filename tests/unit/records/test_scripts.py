"""Script and run_batch in src/records/redis_client.py on a real Redis: a script is sent by its
hash, and by its body again when Redis has forgotten it (a restart)."""

from __future__ import annotations

import pytest
import redis

from src.records.redis_client import Script, run_batch

ECHO = Script("return {KEYS[1], ARGV[1]}")


def test_a_script_runs_by_its_hash_once_redis_knows_it(conn: redis.Redis):
    conn.script_flush()
    assert ECHO(conn, ["k"], ["v"]) == [b"k", b"v"]  # by its body: Redis did not know it
    assert conn.script_exists(ECHO.sha) == [True]
    assert conn.evalsha(ECHO.sha, 1, "k", "v") == [b"k", b"v"]


def test_a_script_in_a_batch_is_run_by_its_body_when_redis_forgot_it(conn: redis.Redis):
    conn.script_flush()
    with conn.pipeline(transaction=False) as pipe:
        pipe.set("before", 1)
        ECHO.queue(pipe, ["k"], ["v"])
        pipe.get("before")
        before, echoed, got = run_batch(pipe)
    assert isinstance(echoed, redis.exceptions.NoScriptError)
    assert (before, got) == (True, b"1")
    assert ECHO.settle(conn, echoed, ["k"], ["v"]) == [b"k", b"v"]
    assert ECHO.settle(conn, [b"as", b"is"], ["k"], ["v"]) == [b"as", b"is"]


def test_a_batch_raises_any_other_error(conn: redis.Redis):
    conn.set("text", "x")
    with conn.pipeline(transaction=False) as pipe:
        ECHO.queue(pipe, ["k"], ["v"])
        pipe.llen("text")  # WRONGTYPE
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            run_batch(pipe)
