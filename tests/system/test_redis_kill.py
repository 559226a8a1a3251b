"""Redis SIGKILLed, not stopped: what the append-only file (`appendfsync everysec`) keeps.

A SIGTERM makes Redis write and fsync the AOF before it exits (tests/system/test_faults.py); a
SIGKILL gives it no such chance. What survives a killed *process* is what Redis had already
handed to the kernel with write(): the page cache outlives the process, so only writes Redis
still held in its own buffer are lost (it holds them up to 2 s while a slow background fsync
runs). A *host* crash also loses what the kernel had not fsynced yet, up to about 1 s of
writes. No test can crash the host; the last two tests play it by loading every prefix of the
AOF that one submit (one retry) wrote, since a crash leaves the file cut where nobody knows.

Whatever is lost, a submit must come back whole (record, RQ job, queue entry, recording index
entry) or not at all: a record without its job would show `processing` forever.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import TypeVar, cast

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.config import Settings
from src.records.redis_client import AUDIO_INDEX_KEY, AUDIO_PINNED_KEY, decoded
from src.records.task_store import TaskRecord
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Env, make_settings, result, submit, wait_status
from tests.support.processes import RedisServer, wait_for
from tests.support.reliability import record
from tests.support.tiny_models import ModelDirs

pytestmark = pytest.mark.slow

T = TypeVar("T")
TASK_PREFIX = "asr:task:"
JOB_PREFIX = "rq:job:"


def aof_tail(directory: Path) -> Path:
    """The incremental AOF file Redis appends to (Redis 7 keeps a base file and increments)."""
    manifest = (directory / "appendonlydir" / "appendonly.aof.manifest").read_text()
    incr = [line.split() for line in manifest.splitlines() if line.endswith("type i")]
    return directory / "appendonlydir" / incr[-1][1]


def command_ends(aof: bytes, start: int) -> list[int]:
    """Offsets just after each whole command (a RESP array of bulk strings) from `start` on."""
    ends = []
    pos = start
    while pos < len(aof):
        assert aof[pos : pos + 1] == b"*", aof[pos : pos + 40]
        eol = aof.index(b"\r\n", pos)
        count = int(aof[pos + 1 : eol])
        pos = eol + 2
        for _ in range(count):
            eol = aof.index(b"\r\n", pos)
            pos = eol + 2 + int(aof[pos + 1 : eol]) + 2  # "$<len>\r\n<bytes>\r\n"
        ends.append(pos)
    return ends


class SubmitState:
    """Which parts of each submit are in Redis and on disk, by task id (no worker has run)."""

    def __init__(self, conn: redis.Redis, settings: Settings) -> None:
        def ids(keys: Iterable[bytes | str], prefix: str) -> set[str]:
            return {decoded(k)[len(prefix) :] for k in keys}

        def stem(names: Iterable[bytes | str]) -> set[str]:
            return {decoded(n).rsplit(".", 1)[0] for n in names}

        self.records = ids(conn.scan_iter(f"{TASK_PREFIX}*"), TASK_PREFIX)
        self.jobs = ids(conn.scan_iter(f"{JOB_PREFIX}*"), JOB_PREFIX)
        self.queued = {decoded(x) for x in conn.lrange(f"rq:queue:{settings.rq_queue_name}", 0, -1)}
        self.indexed = stem(cast("list[bytes]", conn.zrange(AUDIO_INDEX_KEY, 0, -1)))
        self.pinned = stem(conn.smembers(AUDIO_PINNED_KEY))
        self.files = {p.name.rsplit(".", 1)[0] for p in settings.recordings_dir.glob("*.*")}

    def parts(self, task_id: str) -> tuple[bool, ...]:
        """record, job, queue entry, index entry, pin: all or none, never some."""
        return tuple(
            task_id in s for s in (self.records, self.jobs, self.queued, self.indexed, self.pinned)
        )

    def half_submits(self) -> set[str]:
        everyone = self.records | self.jobs | self.queued | self.indexed | self.pinned
        return {t for t in everyone if len(set(self.parts(t))) > 1}


@pytest.fixture
def kenv(tmp_path: Path, model_dirs: ModelDirs) -> Iterator[Env]:
    """A Redis and storage of this test's own: the checks below read the whole keyspace."""
    env = Env(tmp_path, model_dirs)
    yield env
    env.close()


def sigkill(server: RedisServer) -> None:
    proc = server.proc
    assert proc is not None
    server.stop(signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL  # killed, not shut down: no last AOF flush


N_QUEUED = 5


def test_redis_sigkilled_after_the_fsync_keeps_every_queued_job(kenv: Env) -> None:
    """The durable part: submits 1.5 s old have been through everysec's fsync (a killed process
    would not lose them even before it: they are in the page cache), so all must come back."""
    settings = kenv.settings(rq_queue_name="asr-kill")
    conn = kenv.conn()
    with TestClient(create_app(settings)) as client:
        queued = [submit(client, SPEECH_WAV) for _ in range(N_QUEUED)]  # no worker is running
        time.sleep(1.5)
        killed_at = time.monotonic()
        sigkill(kenv.redis)
        kenv.redis.start()
        back_s = time.monotonic() - killed_at
        state = SubmitState(conn, settings)
        assert state.half_submits() == set()
        assert [all(state.parts(t)) for t in queued] == [True] * N_QUEUED
        assert [decoded(x) for x in conn.lrange("rq:queue:asr-kill", 0, -1)] == queued
        bodies = [result(client, t) for t in queued]
        standing = [(body["status"], body["position"]) for body in bodies]
        assert standing == [("queued", i) for i in range(1, N_QUEUED + 1)]

        worker = kenv.worker("kill-w", RQ_QUEUE_NAME="asr-kill")
        worker.wait_ready(conn)
        for task_id in queued:
            assert wait_status(client, task_id, {"done", "failed"}, 120)["status"] == "done"
        recovered = time.monotonic() - killed_at
    record(
        "Redis SIGKILL 1.5 s after 5 submits (AOF everysec), no worker running",
        kept=f"{N_QUEUED}/{N_QUEUED}",
        redis_back_s=round(back_s, 2),
        recovery_s=round(recovered, 1),
        outcome="every task queued again in order; all done once a worker started",
    )


# A submit takes about 20 ms here, Redis its first and last millisecond; kills 0-21 ms after a
# 200 land in every phase of the next submit.
ROUNDS = 8
KILL_STEP_S = 0.003


def burst(
    client: TestClient,
    acks: list[tuple[str, float]],
    refusals: list[int],
    second: threading.Event,
) -> None:
    """Submit until a submit is refused (Redis was killed); note each 200 and when it came."""
    while True:
        with open(SPEECH_WAV, "rb") as fh:
            resp = client.post("/api/v1/asr/submit", files={"audio": ("a.wav", fh)})
        if resp.status_code != 200:
            refusals.append(resp.status_code)
            return
        acks.append((resp.json()["task_id"], time.monotonic()))
        if len(acks) == 2:
            second.set()


def test_submits_around_a_redis_sigkill_come_back_whole_or_not_at_all(kenv: Env) -> None:
    """The window: Redis is SIGKILLed right after a submit was answered 200, while the next
    submit is on its way through Redis. An answered submit whose commands were already in the
    AOF file (the kernel's page cache, read just before the kill) must come back; any other may
    be lost, and then the client's task id answers 404 and its recording is left on disk. No
    submit may come back in part."""
    settings = kenv.settings(rq_queue_name="asr-window")
    conn = kenv.conn()
    aof = aof_tail(kenv.redis.directory)
    acked: list[str] = []
    in_file: set[str] = set()
    delays_ms: list[float] = []
    refusals: list[int] = []
    for step in range(ROUNDS):
        acks: list[tuple[str, float]] = []
        second = threading.Event()
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            submitter = threading.Thread(target=burst, args=(client, acks, refusals, second))
            submitter.start()
            assert second.wait(60)
            time.sleep(step * KILL_STEP_S)
            written = aof.read_bytes()  # what the kernel holds of the AOF at the kill
            sigkill(kenv.redis)
            delays_ms.append((time.monotonic() - acks[1][1]) * 1000)
            submitter.join(60)
            assert not submitter.is_alive()
        acked += [task_id for task_id, _ in acks]
        in_file |= {task_id for task_id, _ in acks if task_id.encode() in written}
        kenv.redis.start()
    assert refusals == [503] * ROUNDS  # the submit under way when Redis died

    state = SubmitState(conn, settings)
    assert state.half_submits() == set()
    kept = [t for t in acked if all(state.parts(t))]
    lost = [t for t in acked if not any(state.parts(t))]
    assert in_file <= set(kept)
    # Redis applied these but died before the API had its answer: the client got a 503.
    unanswered = state.records - set(acked)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for task_id in lost:
            assert client.get(f"/api/v1/asr/result/{task_id}").status_code == 404
            assert task_id in state.files  # an orphan: nothing indexes it, retention never sees it
        worker = kenv.worker("window-w", RQ_QUEUE_NAME="asr-window")
        worker.wait_ready(conn)
        for task_id in kept:
            assert wait_status(client, task_id, {"done", "failed"}, 120)["status"] == "done"
        # Never stuck either. Done when Redis died after the transaction (the 503 came from a
        # later read); failed if it died between EXEC and its reply (the 503 path removed the
        # recording).
        ghosts = [wait_status(client, t, {"done", "failed"}, 120)["status"] for t in unanswered]
    record(
        "Redis SIGKILL right after a submit's 200, the next submit in flight (8 rounds)",
        acknowledged=len(acked),
        kept=len(kept),
        lost=len(lost),
        in_aof_before_kill=len(in_file),
        answered_503_but_kept=len(unanswered),
        of_those_done=ghosts.count("done"),
        kill_after_200_ms=[round(min(delays_ms), 1), round(max(delays_ms), 1)],
        outcome="no half submit; every acknowledged submit in the AOF file came back",
    )


def aof_flushed(conn: redis.Redis) -> bool:
    """Redis holds no command it has not yet write()n to the AOF file."""
    return int(conn.info("persistence")["aof_buffer_length"]) == 0


def every_cut(server: RedisServer, start: int, read: Callable[[redis.Redis], T]) -> list[T]:
    """`read` on each state a host crash could leave of what Redis appended after `start`.

    The crash keeps the AOF up to its last fsync, perhaps a little more: a prefix that ends
    where nobody knows. So each cut at and inside every command since `start` is loaded by a
    fresh redis-server, which drops a torn last command and an unfinished MULTI as it would
    after a real crash (aof-load-truncated, the default)."""
    wait_for(lambda: aof_flushed(server.client()), 5, 0.05, "AOF buffer written")
    sigkill(server)
    data = aof_tail(server.directory).read_bytes()
    ends = command_ends(data, start)
    cuts = sorted({start, *ends, *((a + b) // 2 for a, b in pairwise([start, *ends]))})
    states = []
    for cut in cuts:
        copy = server.directory.parent / f"cut-{cut}"
        shutil.copytree(server.directory, copy)
        with open(aof_tail(copy), "r+b") as fh:
            fh.truncate(cut)
        replica = RedisServer(copy).start()
        try:
            states.append(read(replica.client()))
        finally:
            replica.stop(signal.SIGKILL)
        shutil.rmtree(copy)
    return states


def test_every_cut_of_the_aof_holds_a_submit_whole_or_not_at_all(tmp_path: Path) -> None:
    """A host crash at any point of a submit's writes: the submit is there entirely or not at
    all. (Before, the record and the job were two transactions: a cut between them loaded a
    record with no job, a task shown `processing` forever.)"""
    server = RedisServer(tmp_path / "redis").start()
    settings = make_settings(server.port, tmp_path / "storage", rq_queue_name="asr-cut")
    try:
        with TestClient(create_app(settings)) as client:
            wait_for(lambda: aof_flushed(server.client()), 5, 0.05, "AOF buffer written")
            start = aof_tail(server.directory).stat().st_size
            task_id = submit(client, SPEECH_WAV)
        states = every_cut(server, start, lambda c: SubmitState(c, settings).parts(task_id))
    finally:
        server.stop()
    assert [s for s in states if len(set(s)) > 1] == []
    outcomes = [s[0] for s in states]
    assert outcomes[0] is False and outcomes[-1] is True
    record(
        "host crash played: one submit's AOF cut at and inside every command",
        cuts=len(states),
        whole=outcomes.count(True),
        absent=outcomes.count(False),
        outcome="every cut loads the submit whole or not at all",
    )


QUEUED_AGAIN = ("queued", True, True, True)


def test_every_cut_of_the_aof_holds_a_retry_whole_or_not_at_all(kenv: Env) -> None:
    """The same for a retry: the task is failed as before, or queued with its job and its
    recording pinned; never `queued` without a job, which a retry would then refuse."""
    settings = kenv.settings(rq_queue_name="asr-cut-retry", rq_worker_timeout=1)
    conn = kenv.conn()
    # The sleeping test engine needs 6.6 s for the clip: past the 1 s job timeout, it fails.
    worker = kenv.worker(
        "cut-w",
        RQ_QUEUE_NAME="asr-cut-retry",
        WORKER_ENGINE="tests.support.loudness_engine:load",
        LOUDNESS_DELAY_PER_AUDIO_S="1",
    )
    worker.wait_ready(conn)
    with TestClient(create_app(settings)) as client:
        task_id = submit(client, SPEECH_WAV)
        assert wait_status(client, task_id, {"done", "failed"}, 60)["status"] == "failed"
        worker.stop(10)
        wait_for(lambda: aof_flushed(conn), 5, 0.05, "AOF buffer written")
        start = aof_tail(kenv.redis.directory).stat().st_size
        resp = client.post(f"/api/v1/asr/retry/{task_id}")
        assert resp.status_code == 200, resp.text
    name = next(settings.recordings_dir.glob(f"{task_id}.*")).name

    def read(replica: redis.Redis) -> tuple[str, bool, bool, bool]:
        raw = replica.get(f"{TASK_PREFIX}{task_id}")
        queued = replica.lpos("rq:queue:asr-cut-retry", task_id) is not None
        job = bool(replica.exists(f"{JOB_PREFIX}{task_id}"))
        pinned = bool(replica.sismember(AUDIO_PINNED_KEY, name))
        return TaskRecord.model_validate_json(raw).status.value, queued, job, pinned  # type: ignore[arg-type]

    # (status, queued, job, pinned): before the retry, after its deletion of the failed RQ job
    # (a write of its own), after the one transaction that queues it again.
    allowed = {("failed", False, True, False), ("failed", False, False, False), QUEUED_AGAIN}
    states = every_cut(kenv.redis, start, read)
    assert set(states) <= allowed, states
    assert states[0][0] == "failed" and states[-1] == QUEUED_AGAIN
    record(
        "host crash played: one retry's AOF cut at and inside every command",
        cuts=len(states),
        queued=sum(s[0] == "queued" for s in states),
        still_failed=sum(s[0] == "failed" for s in states),
        outcome="every cut loads the task failed (retry lost) or queued with its job, pinned",
    )
