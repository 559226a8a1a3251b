"""Worker faults found by an operator, each injected for real: a worker restarted under its own
name, Redis down while a job ends, a worker started while Redis is down, /health after a Redis
restart, a full disk at the worker, log rotation across workers.

Real redis-server processes that are stopped and restarted, real worker processes that are
SIGKILLed; figures go to $RELIABILITY_LOG like tests/system/test_faults.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rq.job import Job

from src.api.main import create_app
from src.config import Settings
from src.results import stats
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import (
    Env,
    history_lines,
    make_settings,
    result,
    small_tmpfs,
    submit,
    wait_status,
)
from tests.support.processes import WorkerProcess, wait_for
from tests.support.reliability import record
from tests.support.tiny_models import ModelDirs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_workers")]


def history(settings: Settings, task_id: str) -> list[dict]:
    """The task's JSONL lines, once there is one: the worker writes it just after `done`."""
    wait_for(lambda: history_lines(settings, task_id), 10, 0.05, f"history line of {task_id}")
    time.sleep(0.2)  # a second line, were there one, would follow at once
    return history_lines(settings, task_id)


def test_restarted_lone_worker_requeues_its_predecessors_job_at_once(fenv: Env, long_clip: Path):
    """RQ_WORKER_COUNT=1: the supervisor restarts worker-1 under the same name; the new process
    must not take the dead one's job for its own (it used to stay `processing` for 11 min)."""
    conn = fenv.conn()
    first = fenv.worker("solo")
    first.wait_ready(conn)
    settings = fenv.settings()
    with TestClient(create_app(settings)) as client:
        task_id = submit(client, long_clip)
        # Started, not only taken off the queue (that window has its own test in
        # tests/unit/queue/test_recovery.py): `processing` alone is shown for both.
        wait_for(lambda: result(client, task_id)["attempts"] >= 1, 60, 0.05, "job started")
        first.kill_group(signal.SIGKILL)
        first.proc.wait(10)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        second = fenv.worker("solo")
        second.wait_ready(conn)
        ready_at = time.monotonic()

        def requeued() -> dict | None:
            body = result(client, task_id)
            return body if body["status"] == "queued" or body["attempts"] >= 2 else None

        wait_for(requeued, 30, 0.05, "requeued by the restarted worker")
        requeue_s = time.monotonic() - ready_at
        body = wait_status(client, task_id, {"done", "failed"}, 120)
    assert body["status"] == "done", body
    assert body["attempts"] == 2
    assert requeue_s < 10  # a hang guard: the figure goes to the report
    assert [x["status"] for x in history(settings, task_id)] == ["success"]
    assert history(settings, task_id)[0]["worker_id"] == "solo"
    assert "requeued: its worker solo stopped mid-job" in second.output()
    record(
        "the only worker SIGKILLed mid-job, restarted under the same name",
        recovery_s=round(time.monotonic() - killed_at, 1),
        requeue_after_ready_s=round(requeue_s, 2),
        outcome="the restarted worker requeued its predecessor's job on start; done, attempts=2",
    )


def test_both_workers_killed_at_once_both_jobs_are_rerun(fenv: Env, long_clip: Path):
    conn = fenv.conn()
    workers = [fenv.worker("pair-1"), fenv.worker("pair-2")]
    for w in workers:
        w.wait_ready(conn)
    settings = fenv.settings(asr_batch_jobs=1)
    with TestClient(create_app(settings)) as client:
        tasks = [submit(client, long_clip) for _ in workers]
        for task_id in tasks:
            wait_status(client, task_id, {"processing"}, 60)

        # `processing` shows as soon as a worker took the job off its lane; RQ names the worker
        # on the job a moment later, when it starts it.
        def owners() -> set[str | None]:
            return {Job.fetch(t, connection=conn).worker_name for t in tasks}

        wait_for(lambda: owners() == {"pair-1", "pair-2"}, 10, 0.05, "both jobs started")
        for w in workers:
            w.kill_group(signal.SIGKILL)
        for w in workers:
            w.proc.wait(10)  # type: ignore[union-attr]
        fenv.workers.clear()
        killed_at = time.monotonic()
        for name in ("pair-1", "pair-2"):
            fenv.worker(name).wait_ready(conn)
        bodies = [wait_status(client, t, {"done", "failed"}, 180) for t in tasks]
        recovered = time.monotonic() - killed_at
    assert [b["status"] for b in bodies] == ["done", "done"], bodies
    for task_id in tasks:
        assert [x["status"] for x in history(settings, task_id)] == ["success"]
        # Both died together: neither death counts towards the task's poison limit.
        assert json.loads(conn.get(f"asr:task:{task_id}"))["abandons"] == 0  # type: ignore[arg-type]
    record(
        "both workers SIGKILLed at once mid-job, both restarted",
        recovery_s=round(recovered, 1),
        outcome="both jobs requeued and done once each; the deaths were not counted as poison",
    )


def test_redis_down_when_a_job_ends_keeps_the_result_and_the_worker(fenv: Env, long_clip: Path):
    """Redis stopped for 60 s around the end of a job: the worker keeps the transcript, retries
    with back-off, writes it once Redis is back, and is still the same process."""
    conn = fenv.conn()
    worker = fenv.worker("outage-w")
    worker.wait_ready(conn)
    pid = worker.proc.pid  # type: ignore[union-attr]
    settings = fenv.settings()
    outage_s = 60
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        task_id = submit(client, long_clip)
        wait_status(client, task_id, {"processing"}, 60)
        fenv.redis.stop(signal.SIGTERM)
        time.sleep(outage_s)  # the 300 s clip takes about 5 s: it ends inside the outage
        assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-2000:]
        fenv.redis.start()
        back_at = time.monotonic()
        body = wait_status(client, task_id, {"done", "failed"}, 120)
        written_s = time.monotonic() - back_at
        assert body["status"] == "done", body
        assert body["attempts"] == 1
        assert worker.proc.poll() is None and worker.proc.pid == pid
        short = submit(client, SPEECH_WAV)  # and it goes on serving
        assert wait_status(client, short, {"done", "failed"}, 60)["status"] == "done"
    assert [x["status"] for x in history(settings, task_id)] == ["success"]
    out = worker.output()
    assert "Redis unreachable" in out
    assert out.count("models loaded") == 1 and "unhandled exception" not in out
    record(
        f"Redis stopped for {outage_s} s while a job ends",
        recovery_s=round(written_s, 1),
        outcome="the worker kept the transcript and wrote it after Redis came back; same pid, "
        "one history line",
    )


def test_worker_started_while_redis_is_down_waits_then_serves(fenv: Env):
    conn = fenv.conn()
    fenv.redis.stop(signal.SIGTERM)
    worker = fenv.worker("late-w")
    wait_for(lambda: "waiting for Redis" in worker.output(), 180, 0.2, "model loaded, waiting")
    time.sleep(8)  # several rounds of back-off: it used to exit here and reload the model
    assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-2000:]
    assert worker.output().count("waiting for Redis") >= 3
    fenv.redis.start()
    back_at = time.monotonic()
    worker.wait_ready(conn, 60)
    ready_s = time.monotonic() - back_at
    with TestClient(create_app(fenv.settings())) as client:
        task_id = submit(client, SPEECH_WAV)
        assert wait_status(client, task_id, {"done", "failed"}, 60)["status"] == "done"
    assert worker.output().count("models loaded") == 1
    record(
        "worker started while Redis is down (model loaded, then 8 s more)",
        recovery_s=round(ready_s, 1),
        outcome="waited with back-off holding its model (one load), ready once Redis was back",
    )


def test_first_health_after_a_redis_restart_is_not_a_stale_503(fenv: Env):
    conn = fenv.conn()
    beacon = {"name": "probe", "pid": 1, "hostname": "elsewhere", "model_loaded": True}
    with TestClient(create_app(fenv.settings()), raise_server_exceptions=False) as client:
        conn.set("asr:worker:probe", json.dumps(beacon), ex=60)
        conn.zadd("asr:workers", {"probe": time.time()})
        assert client.get("/api/v1/health").status_code == 200
        assert client.get("/api/v1/stats").status_code == 200
        fenv.redis.stop(signal.SIGTERM)
        fenv.redis.start()
        first = client.get("/api/v1/health")
        stats_first = client.get("/api/v1/stats")
    conn.delete("asr:worker:probe")
    conn.zrem("asr:workers", "probe")
    assert first.status_code == 200, first.text
    assert first.json()["redis_connected"] is True
    assert stats_first.status_code == 200, stats_first.text


def test_full_disk_at_the_worker_keeps_the_transcript(fenv: Env, model_dirs: ModelDirs, tmp_path):
    """The logs directory (the JSONL history) is a full tmpfs when the job ends: the task is
    still done with its text, and the lost history line is logged and counted."""
    storage = tmp_path / "storage"
    with small_tmpfs(storage / "logs", "256k") as logs:
        settings = make_settings(fenv.redis.port, storage, rq_queue_name="asr-fulldisk")
        env = fenv.env(STORAGE_PATH=str(storage), RQ_QUEUE_NAME="asr-fulldisk")
        worker = WorkerProcess("disk-w", env, tmp_path / "out").start()
        fenv.workers.append(worker)
        worker.wait_ready(fenv.conn())
        filler = logs / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        before = stats.read(fenv.conn()).get("history_write_errors", 0)
        with TestClient(create_app(settings)) as client:
            task_id = submit(client, SPEECH_WAV)
            body = wait_status(client, task_id, {"done", "failed"}, 60)
            assert body["status"] == "done", body
            assert body["text"] is not None and body["sentences"]
            wait_for(
                lambda: client.get("/api/v1/stats").json()["history_write_errors"] == before + 1,
                10,
                0.1,
                "the lost history line counted",
            )
        wait_for(lambda: "history line NOT written" in worker.output(), 10, 0.1, "error logged")
        filler.unlink()
        record(
            "disk full at the worker when a job ends (history append ENOSPC)",
            recovery_s=0,
            outcome="task done with its transcript; the lost JSONL line logged as an error and "
            "counted in /stats history_write_errors",
        )
        worker.stop(10)  # before the unmount


def test_each_worker_keeps_its_own_log_across_rotation(fenv: Env):
    """With a 4 KB rotation, each worker's current asr_worker.<name>.log still gets its lines:
    no worker keeps writing into a file another worker rotated away."""
    conn = fenv.conn()
    queue = "asr-rotation"
    workers = [
        fenv.worker(name, LOG_ROTATION="4 KB", RQ_QUEUE_NAME=queue, ASR_BATCH_JOBS="1")
        for name in ("rot-1", "rot-2")
    ]
    for w in workers:
        w.wait_ready(conn)
    settings = fenv.settings(rq_queue_name=queue)
    with TestClient(create_app(settings)) as client:
        tasks = [submit(client, SPEECH_WAV) for _ in range(12)]
        for task_id in tasks:
            assert wait_status(client, task_id, {"done", "failed"}, 60)["status"] == "done"
    logs = settings.logs_dir
    for w in workers:
        files = [logs / f"asr_worker.{w.name}.log", *logs.glob(f"asr_worker.{w.name}.*.log")]
        assert len(files) > 1, f"{w.name} never rotated: raise the job count"
        mine = [t for t in tasks if history(settings, t)[0]["worker_id"] == w.name]
        for task_id in mine:  # every line of this worker is in its own files, once

            def found(t: str = task_id, fs: list[Path] = files) -> bool:
                return sum(f.read_text().count(f"task={t} status=completed") for f in fs) == 1

            wait_for(found, 10, 0.1, f"{task_id} completed, once, in {w.name}'s files")
        other = next(x for x in workers if x is not w)
        for path in files:
            assert f"{other.name} task=" not in path.read_text()
