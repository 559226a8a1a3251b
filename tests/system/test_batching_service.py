"""Cross-job batching through the real service: API, Redis, RQ and a worker with ASR_BATCH_JOBS.

Jobs are queued while no worker runs, so the worker finds them waiting and batches them; each
job must still end with its own result (the same text the engine gives that clip alone), its
own history line, and its own failure when its recording is bad.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.asr.recognizer import SpeechRecognizer
from src.queue import job_queue
from src.records import task_store
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_long
from tests.support.fixtures import Env, history_lines, result, submit, wait_status
from tests.support.tiny_models import ModelDirs

pytestmark = pytest.mark.slow

BATCH_ENV = {"ASR_BATCH_JOBS": "4", "ASR_BATCH_MAX_AUDIO_SECONDS": "10"}


@pytest.fixture(scope="module")
def benv(tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("batching"), model_dirs)
    yield env
    env.close()


@pytest.fixture
def client(benv: Env) -> Iterator[TestClient]:
    benv.conn().flushall()
    settings = benv.settings(asr_batch_jobs=4, asr_batch_max_audio_seconds=10)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
    for worker in benv.workers:
        worker.stop(10)
    benv.workers.clear()


def worker_of(benv: Env, task_id: str) -> str | None:
    record = task_store.load(benv.conn(), task_id)
    return record.worker_id if record else None


def test_waiting_short_jobs_are_batched_and_each_gets_its_own_result(
    benv: Env, client: TestClient, recognizer: SpeechRecognizer, tmp_path: Path
):
    eight = make_long(SPEECH_WAV, tmp_path, seconds=8, fmt="flac")
    twelve = make_long(SPEECH_WAV, tmp_path, seconds=12, fmt="flac")  # over the batch limit
    clips = {"ogg-1": SPEECH_OGG, "ogg-2": SPEECH_OGG, "flac-8": eight, "bad": SPEECH_OGG}
    ids = {name: submit(client, path) for name, path in clips.items()}
    ids["flac-12"] = submit(client, twelve)
    # Spoil one stored recording after the upload check: only the worker can find out.
    conn = benv.conn()
    record = task_store.load(conn, ids["bad"])
    assert record is not None
    (benv.storage / "recordings" / record.file).write_bytes(b"\x00garbage" * 512)

    worker = benv.worker("batch-1", **BATCH_ENV)
    finished = {
        name: wait_status(client, tid, {"done", "failed"}, 180) for name, tid in ids.items()
    }

    assert finished["bad"]["status"] == "failed"
    assert finished["bad"]["error"].startswith("Invalid audio"), finished["bad"]["error"]
    for name in ("ogg-1", "ogg-2", "flac-8", "flac-12"):
        body = finished[name]
        assert body["status"] == "done", body
        assert body["text"] == recognizer.recognize(clips.get(name, twelve)).text
        assert body["progress"] == 100 and worker_of(benv, ids[name]) == "batch-1"
    for task_id in ids.values():
        assert len(history_lines(benv.settings(), task_id)) == 1

    log = worker.output()
    batch = re.search(r"batch of (\d+) tasks .*: (.*)", log)
    assert batch, log[-3000:]
    assert batch.group(1) == "4"  # the 12 s clip waits for its own run
    assert set(batch.group(2).split(", ")) == {ids[n] for n in ("ogg-1", "ogg-2", "flac-8", "bad")}
    assert f"task={ids['bad']} left its batch" in log
    assert job_queue.claimed(conn, "batch-1") == []
    assert client.get("/api/v1/asr/queue/status").json()["failed"] == 1


def test_jobs_claimed_by_a_worker_that_died_are_put_back_and_done(benv: Env, client: TestClient):
    ids = [submit(client, SPEECH_OGG) for _ in range(3)]
    conn = benv.conn()
    queue = job_queue.get_queue(conn, benv.settings())
    # A worker that no longer exists took them for a batch: no beacon, no RQ registration.
    assert job_queue.claim(conn, queue, "batch-gone", ids) == ids
    assert queue.count == 0

    worker = benv.worker("batch-2", **BATCH_ENV)
    for task_id in ids:
        wait_status(client, task_id, {"done"}, 120)
        assert worker_of(benv, task_id) == "batch-2"
    assert job_queue.claimed(conn, "batch-gone") == []
    assert "batch-gone" not in job_queue.claimers(conn)
    assert worker.output().count("stopped before running it") == 3


def test_a_restarted_worker_returns_its_own_stale_claims(benv: Env, client: TestClient):
    task_id = submit(client, SPEECH_OGG)
    conn = benv.conn()
    queue = job_queue.get_queue(conn, benv.settings())
    job_queue.claim(conn, queue, "batch-3", [task_id])  # left by batch-3's previous process
    benv.worker("batch-3", **BATCH_ENV)
    wait_status(client, task_id, {"done"}, 120)
    assert worker_of(benv, task_id) == "batch-3"
    assert result(client, task_id)["text"]


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_a_pipelined_worker_keeps_each_job_apart_and_its_prep_process_ends_with_it(
    benv: Env, client: TestClient, recognizer: SpeechRecognizer, tmp_path: Path
):
    """ASR_PREP_PROCESSES=1: the clips of a pass are decoded and cut in a spawned prep process
    while the ASR model runs waves of ASR_BATCH_JOBS; each job still gets its own result and
    its own failure. A SIGKILLed worker takes its prep process with it."""
    eight = make_long(SPEECH_WAV, tmp_path, seconds=8, fmt="flac")
    clips = {"ogg-1": SPEECH_OGG, "ogg-2": SPEECH_OGG, "flac-8": eight, "bad": SPEECH_OGG}
    clips |= {"ogg-3": SPEECH_OGG}
    ids = {name: submit(client, path) for name, path in clips.items()}
    conn = benv.conn()
    record = task_store.load(conn, ids["bad"])
    assert record is not None
    (benv.storage / "recordings" / record.file).write_bytes(b"\x00garbage" * 512)

    env = BATCH_ENV | {"ASR_BATCH_JOBS": "2", "ASR_PREP_PROCESSES": "1"}
    worker = benv.worker("pipe-1", **env)
    finished = {
        name: wait_status(client, tid, {"done", "failed"}, 240) for name, tid in ids.items()
    }
    assert finished["bad"]["status"] == "failed"
    assert finished["bad"]["error"].startswith("Invalid audio"), finished["bad"]["error"]
    for name in ("ogg-1", "ogg-2", "ogg-3", "flac-8"):
        assert finished[name]["status"] == "done", finished[name]
        assert finished[name]["text"] == recognizer.recognize(clips[name]).text
    log = worker.output()
    assert "1 prep process(es) ready" in log, log[-3000:]
    batch = re.search(r"batch of (\d+) tasks", log)
    assert batch and batch.group(1) == "5", log[-3000:]  # waves of 2 in one pass of up to 8
    assert worker.proc is not None
    prep = children_of(worker.proc.pid)
    assert prep, "the worker has no prep process"

    worker.proc.send_signal(signal.SIGKILL)  # the worker alone, not its process group
    worker.proc.wait(10)
    deadline = time.monotonic() + 10
    while (
        alive := [p for p in prep if Path(f"/proc/{p}").exists()]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"prep processes outlived their worker: {alive}"
