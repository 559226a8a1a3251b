"""Faults injected for real: SIGKILLed workers, a killed supervisor, job timeouts, model errors,
Redis restarts and stalls, a full disk. Each test uses real processes and a real redis-server.

Measured recovery times are appended to $RELIABILITY_LOG (JSON lines) when it is set;
the rows of report/RELIABILITY.md are written from them (see its header for the command).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from rq.job import Job
from rq.registry import StartedJobRegistry

from src.api.main import create_app
from src.queue import job_queue
from src.records import task_store
from src.vocabulary import Stage, TaskStatus
from tests.support.audio_samples import SPEECH_WAV, make_long
from tests.support.fixtures import (
    Env,
    history_lines,
    make_settings,
    result,
    small_tmpfs,
    submit,
    wait_status,
)
from tests.support.processes import ROOT, wait_for
from tests.support.reliability import record

# The sweep runs every 5 s and a dead pid is seen at once; a little more for a loaded 2-core box.
REQUEUE_BOUND_S = 10

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_workers")]


def test_sigkilled_worker_job_is_rerun_and_finished(fenv: Env, long_clip: Path, tmp_path: Path):
    """README: a job whose worker dies is back on the queue within seconds and shows `queued`
    again. The survivor is kept busy with a longer recording, so the requeued job waits in the
    queue where a poll can see it (an idle survivor would take it within milliseconds)."""
    workers = [fenv.worker("kill-a"), fenv.worker("kill-b")]
    for w in workers:
        w.wait_ready(fenv.conn())
    settings = fenv.settings()
    longer = make_long(SPEECH_WAV, tmp_path, seconds=900, fmt="flac")  # ~3x long_clip's work
    with TestClient(create_app(settings)) as client:
        task_id = submit(client, long_clip)
        wait_status(client, task_id, {"processing"}, 60)
        busy_id = submit(client, longer)
        wait_status(client, busy_id, {"processing"}, 60)
        owner = Job.fetch(task_id, connection=fenv.conn()).worker_name
        victim = next(w for w in workers if w.name == owner)
        killed_at = time.monotonic()
        victim.kill_group(signal.SIGKILL)

        requeued = wait_status(client, task_id, {"queued", "done", "failed"}, REQUEUE_BOUND_S)
        requeued_s = time.monotonic() - killed_at
        assert (requeued["status"], requeued["position"]) == ("queued", 1), requeued
        assert requeued["stage"] == "requeued" and requeued["progress"] == 0, requeued

        statuses: list[str] = []

        def finished() -> dict | None:
            body = result(client, task_id)
            statuses.append(body["status"])
            return body if body["status"] in ("done", "failed") else None

        body = wait_for(finished, 180, 0.1, "re-run after SIGKILL")
        recovered = time.monotonic() - killed_at
        assert wait_status(client, busy_id, {"done", "failed"}, 120)["status"] == "done"
    assert body["status"] == "done", body  # type: ignore[index]
    assert "failed" not in statuses
    assert body["attempts"] == 2  # type: ignore[index]
    survivor = next(w for w in workers if w is not victim)
    lines = history_lines(settings, task_id)
    assert [x["status"] for x in lines] == ["success"]
    assert lines[0]["worker_id"] == survivor.name
    record(
        "worker SIGKILL (process group) mid-job",
        recovery_s=round(recovered, 1),
        requeued_s=round(requeued_s, 1),
        outcome="requeued, finished by the other worker, attempts=2, never failed",
    )
    for w in workers:
        w.stop(10)


# The sleeping test engine (tests/support/loudness_engine.py) pools up to ASR_BATCH_JOBS inputs
# in one pass and sleeps this long per audio second: a 6.6 s voice note costs 3.5 s, whatever
# the CPU, so a pass of three is 10.5 s long and can be caught in its middle.
BATCH_DELAY_S = 0.5
BATCH_ENV = {
    "WORKER_ENGINE": "tests.support.loudness_engine:load",
    "LOUDNESS_DELAY_PER_AUDIO_S": str(BATCH_DELAY_S),
    "ASR_BATCH_JOBS": "4",
    "ASR_BATCH_MAX_AUDIO_SECONDS": "10",
    "RQ_QUEUE_NAME": "asr-mid-batch",
}


def test_sigkilled_worker_mid_batch_every_batch_job_is_rerun_once(fenv: Env, tmp_path: Path):
    """Issue 15: a worker killed inside a pooled pass holds two kinds of jobs: the one RQ
    started (in the started registry, under its owner) and the batch-mates it claimed and marked
    `processing` (on its claim list only). Every one must be back on the queue within seconds
    and end `done` once, by the survivor; the jobs outside the batch are not touched.

    The survivor starts first and is kept busy with a long recording, so that the four voice
    notes wait for the victim, which takes three of them as one batch (its fair share with two
    workers up), and the requeued jobs wait in the queue where a poll can see them."""
    conn = fenv.conn()
    conn.flushall()  # deaths and worker registrations left by this module's earlier kills
    settings = fenv.settings(rq_queue_name=BATCH_ENV["RQ_QUEUE_NAME"])
    queue = job_queue.get_queue(conn, settings)
    long_one = make_long(SPEECH_WAV, tmp_path, seconds=60, fmt="flac")  # 30 s; never batched
    survivor = fenv.worker("mid-batch-b", **BATCH_ENV)
    survivor.wait_ready(conn)
    with TestClient(create_app(settings)) as client:
        outsider = submit(client, long_one)
        wait_status(client, outsider, {"processing"}, 60)
        notes = [submit(client, SPEECH_WAV) for _ in range(4)]
        victim = fenv.worker("mid-batch-a", **BATCH_ENV)

        def under_way() -> list[str] | None:
            """The victim's claimed batch-mates, once its pass has moved past the leader."""
            mates = job_queue.claimed(conn, victim.name)
            first = task_store.load(conn, mates[0]) if len(mates) == 2 else None
            return mates if first is not None and first.stage == Stage.RECOGNITION else None

        mates = wait_for(under_way, 60, 0.05, "the victim's pass on its second clip")
        assert isinstance(mates, list)
        started = StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)
        (leader,) = [t for t in notes if t in started]
        batch = [leader, *mates]
        (waiting,) = [t for t in notes if t not in batch]
        before = {t: task_store.load(conn, t) for t in [*batch, waiting]}
        victim.kill_group(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(10)  # type: ignore[union-attr]

        # The kill landed inside one pass: all three were `processing` on the victim together,
        # one of them in RQ's started registry and two on its claim list, and the pass never
        # returned (its "batch of" line and every completion come after it).
        assert Job.fetch(leader, connection=conn).worker_name == victim.name
        for task_id in batch:
            rec = before[task_id]
            assert rec is not None and rec.status == TaskStatus.PROCESSING, rec
            assert (rec.worker_id, rec.attempts) == (victim.name, 1), rec
        assert before[waiting].status == TaskStatus.QUEUED  # type: ignore[union-attr]
        assert 1 < before[mates[0]].progress < 100  # type: ignore[union-attr]
        assert "batch of" not in victim.output()
        assert "status=completed" not in victim.output()

        seen: dict[str, list[str]] = {t: [] for t in [*batch, waiting, outsider]}
        done_s: dict[str, float] = {}  # from the kill to each task's first `done` poll

        def poll() -> dict[str, dict]:
            bodies = {t: result(client, t) for t in seen}
            for task_id, body in bodies.items():
                seen[task_id].append(body["status"])
                if body["status"] == "done":
                    done_s.setdefault(task_id, time.monotonic() - killed_at)
            return bodies

        def requeued() -> bool:
            bodies = poll()
            return all(bodies[t]["status"] == "queued" or bodies[t]["attempts"] >= 2 for t in batch)

        wait_for(requeued, REQUEUE_BOUND_S, 0.05, "the whole batch back on the queue")
        requeued_s = time.monotonic() - killed_at

        def finished() -> dict[str, dict] | None:
            bodies = poll()
            ended = all(b["status"] in ("done", "failed") for b in bodies.values())
            return bodies if ended else None

        bodies = wait_for(finished, 180, 0.1, "the batch re-run after SIGKILL")
        recovered = time.monotonic() - killed_at
        assert isinstance(bodies, dict)
        assert client.get("/api/v1/asr/queue/status").json()["failed"] == 0

    for task_id, body in bodies.items():
        assert body["status"] == "done", body
        assert "failed" not in seen[task_id], (task_id, seen[task_id])
        lines = history_lines(settings, task_id)
        assert [(x["status"], x["worker_id"]) for x in lines] == [("success", survivor.name)]
    for task_id in batch:
        assert bodies[task_id]["attempts"] == 2, bodies[task_id]
    for task_id in (waiting, outsider):
        assert bodies[task_id]["attempts"] == 1, bodies[task_id]
    abandons = {t: task_store.load(conn, t).abandons for t in seen}  # type: ignore[union-attr]
    # The death counts once towards the poison limit, against the job RQ ran; not the mates'.
    assert abandons == {leader: 1, mates[0]: 0, mates[1]: 0, waiting: 0, outsider: 0}
    out = survivor.output()
    assert f"task={leader} requeued: its worker {victim.name} stopped mid-job (1 of 3)" in out
    for task_id in mates:
        assert f"task={task_id} requeued: its worker {victim.name} stopped before" in out
    assert job_queue.claimed(conn, victim.name) == []
    assert victim.name not in job_queue.claimers(conn)
    back_in_queue = [t for t in batch if "queued" in seen[t][: seen[t].index("done")]]
    record(
        "worker SIGKILL (process group) mid-batch: 3 voice notes in one pooled pass",
        recovery_s=round(recovered, 1),
        requeued_s=round(requeued_s, 1),
        seen_queued=len(back_in_queue),
        survivor_free_s=round(done_s[outsider], 1),  # the survivor's own long job ended
        batch_done_s=round(max(done_s[t] for t in batch), 1),
        outcome="the started job requeued by the sweep, its 2 claimed batch-mates returned; "
        "all 3 done once by the survivor, attempts=2, never failed; jobs outside the batch ran "
        "once",
    )


def test_killing_only_the_supervisor_never_runs_a_job_twice(
    fenv: Env, long_clip: Path, tmp_path: Path
):
    """scripts/start_workers.sh supervises worker-1; killing the supervisor (the worker's parent)
    leaves the worker and its job alone, and a second worker-1 refuses to start."""
    env = fenv.env(RQ_WORKER_COUNT="1", WORKER_PID_DIR=str(tmp_path))
    sup_log = open(tmp_path / "sup.out", "wb")  # noqa: SIM115 - the child writes it
    sup = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "start_workers.sh"), "1"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=sup_log,
        stderr=subprocess.STDOUT,
    )
    worker_pid = 0
    try:
        info = wait_for(lambda: fenv.conn().get("asr:worker:worker-1"), 180, 0.2, "worker-1 ready")
        worker_pid = json.loads(info)["pid"]  # type: ignore[arg-type]
        parent = int(Path(f"/proc/{worker_pid}/stat").read_text().split()[3])
        settings = fenv.settings()
        with TestClient(create_app(settings)) as client:
            task_id = submit(client, long_clip)
            wait_status(client, task_id, {"processing"}, 60)
            os.kill(parent, signal.SIGKILL)
            os.kill(sup.pid, signal.SIGKILL)
            # A restarted supervisor would start worker-1 again: it must refuse while one lives.
            twin = subprocess.run(
                [
                    str(ROOT / ".venv" / "bin" / "python"),
                    "-m",
                    "src.worker",
                    "--name",
                    "worker-1",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert twin.returncode != 0
            assert "already running" in twin.stderr + twin.stdout
            body = wait_status(client, task_id, {"done", "failed"}, 120)
        assert body["status"] == "done" and body["attempts"] == 1
        assert [x["status"] for x in history_lines(settings, task_id)] == ["success"]
        assert os.path.exists(f"/proc/{worker_pid}")  # the orphaned worker keeps serving
        record(
            "supervisor (worker's parent) SIGKILL mid-job",
            recovery_s=0,
            outcome="job finished once by the same worker; a second worker-1 refused to start",
        )
    finally:
        if worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker_pid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sup.pid, signal.SIGKILL)
        sup_log.close()
        if worker_pid:
            wait_for(
                lambda: (
                    not os.path.exists(f"/proc/{worker_pid}")
                    or "Z" in Path(f"/proc/{worker_pid}/stat").read_text().split()[2]
                ),
                60,
                0.2,
            )


def test_job_timeout_fails_the_job_and_the_worker_goes_on(fenv: Env, long_clip: Path):
    """The test engine sleeps 0.1 s per second of audio: the 300 s clip needs 30 s, whatever
    the CPU, against a 2 s timeout; the 6.6 s clip after it needs 0.7 s."""
    worker = fenv.worker(
        "timeout-w",
        WORKER_ENGINE="tests.support.loudness_engine:load",
        LOUDNESS_DELAY_PER_AUDIO_S="0.1",
    )
    worker.wait_ready(fenv.conn())
    settings = fenv.settings(rq_worker_timeout=2)
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        task_id = submit(client, long_clip)
        body = wait_status(client, task_id, {"done", "failed"}, 120)
        elapsed = time.monotonic() - started
        assert body["status"] == "failed"
        assert body["error"] == "Processing timeout (2s exceeded)"
        assert body["retry_url"] == f"/api/v1/asr/retry/{task_id}"
        short = submit(client, SPEECH_WAV)
        served = wait_status(client, short, {"done", "failed"}, 60)
        assert served["status"] == "done", served
        # The sleeping test engine ran it, not FunASR: its text is the duration and level.
        assert re.fullmatch(r"6\.61 s at -[\d.]+ dBFS", served["text"]), served
    assert worker.proc is not None and worker.proc.poll() is None
    assert history_lines(settings, task_id)[0]["error"] == "Processing timeout (2s exceeded)"
    record(
        "job past RQ_WORKER_TIMEOUT (2 s)",
        recovery_s=round(elapsed, 1),
        outcome="failed: 'Processing timeout (2s exceeded)', retry_url; worker served next job",
    )
    worker.stop(10)


def broken_model(src: Path, dest: Path) -> Path:
    """A model dir that loads but fails on every input: am.mvn cut to 400 of 560 dims."""
    shutil.copytree(src, dest)
    mvn = dest / "am.mvn"
    text = re.sub(
        r"\[ ((?:-?[\d.]+ ){100,}-?[\d.]+) \]",
        lambda m: "[ " + " ".join(m.group(1).split()[:400]) + " ]",
        mvn.read_text(),
    )
    mvn.write_text(text)
    return dest


def test_model_error_fails_only_that_job(fenv: Env, tmp_path: Path):
    bad_dir = broken_model(fenv.models["asr"], tmp_path / "broken-asr")
    queue = "asr-broken"
    worker = fenv.worker("broken-w", ASR_MODEL=str(bad_dir), RQ_QUEUE_NAME=queue)
    worker.wait_ready(fenv.conn())
    settings = fenv.settings(rq_queue_name=queue)
    with TestClient(create_app(settings)) as client:
        first = submit(client, SPEECH_WAV)
        second = submit(client, SPEECH_WAV)
        for task_id in (first, second):
            body = wait_status(client, task_id, {"done", "failed"}, 60)
            assert body["status"] == "failed"
            assert body["error"].startswith("Recognition failed: RuntimeError")
            assert "/" not in body["error"] and "Traceback" not in body["error"]
    assert worker.proc is not None and worker.proc.poll() is None
    line = history_lines(settings, first)[0]
    assert line["status"] == "failed" and line["error"].startswith("Recognition failed")
    errors = (settings.logs_dir / "asr_error.broken-w.log").read_text()
    assert f"task={first} status=failed" in errors
    assert "Traceback" in errors and "RuntimeError" in errors
    record(
        "exception inside recognition (broken model)",
        recovery_s=0,
        outcome="that job failed with a clear error, JSONL line, traceback in the worker's "
        "asr_error.<name>.log; "
        "worker kept serving",
    )
    worker.stop(10)


def test_redis_restart_keeps_queued_jobs_and_workers_reconnect(fenv: Env):
    settings = fenv.settings()
    conn = fenv.conn()
    with TestClient(create_app(settings)) as client:
        queued = [submit(client, SPEECH_WAV) for _ in range(5)]  # no worker is running
        fenv.redis.stop(signal.SIGTERM)
        fenv.redis.start()
        assert {result(client, t)["status"] for t in queued} == {"queued"}
        assert conn.llen(f"rq:queue:{settings.rq_queue_name}") >= 5

        worker = fenv.worker("restart-w")
        worker.wait_ready(conn)
        pid = worker.proc.pid  # type: ignore[union-attr]
        for task_id in queued:
            assert wait_status(client, task_id, {"done", "failed"}, 60)["status"] == "done"

        # Restart Redis under a running, idle worker: it reconnects without reloading the model.
        fenv.redis.stop(signal.SIGTERM)
        down_at = time.monotonic()
        time.sleep(2)
        fenv.redis.start()
        task_id = submit(client, SPEECH_WAV)
        body = wait_status(client, task_id, {"done", "failed"}, 120)
        recovered = time.monotonic() - down_at
        assert body["status"] == "done"
        assert worker.proc is not None and worker.proc.pid == pid and worker.proc.poll() is None
        assert worker.output().count("models loaded") == 1
    record(
        "Redis restart (SIGTERM, AOF everysec)",
        recovery_s=round(recovered, 1),
        outcome="5 queued jobs survived and completed; idle worker reconnected, same pid, "
        "model not reloaded",
    )
    worker.stop(10)


def test_stalled_redis_gets_503_quickly_and_recovers(fenv: Env):
    """SIGSTOP makes Redis accept connections but never answer: the worst case for timeouts."""
    settings = fenv.settings()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        task_id = submit(client, SPEECH_WAV)
        fenv.redis.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            timings = {}
            for path in [
                "/api/v1/health",
                f"/api/v1/asr/result/{task_id}",
                "/api/v1/asr/history",
                "/api/v1/asr/queue/status",
                "/api/v1/stats",
            ]:
                started = time.monotonic()
                resp = client.get(path)
                timings[path] = time.monotonic() - started
                assert resp.status_code == 503, (path, resp.text)
                assert "Traceback" not in resp.text
            started = time.monotonic()
            with open(SPEECH_WAV, "rb") as fh:
                resp = client.post("/api/v1/asr/submit", files={"audio": ("a.wav", fh)})
            timings["submit"] = time.monotonic() - started
            assert resp.status_code == 503
            assert max(timings.values()) < 5  # a hang detector; the figure goes to the report
        finally:
            fenv.redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        assert client.get(f"/api/v1/asr/result/{task_id}").status_code == 200
    record(
        "Redis stalled (SIGSTOP)",
        max_503_s=round(max(timings.values()), 2),
        outcome="every endpoint 503 JSON; recovered on SIGCONT without an API restart",
    )


def test_disk_full_while_saving_an_upload_is_507(fenv: Env, tmp_path: Path):
    """The recordings directory is a 128 KB tmpfs; the upload is 212 KB."""
    storage = tmp_path / "storage"
    with small_tmpfs(storage / "recordings", "128k") as mount:
        settings = make_settings(fenv.redis.port, storage, rq_queue_name="asr-disk")
        conn = fenv.conn()
        tasks_before = set(conn.scan_iter("asr:task:*"))
        index_before = conn.zrange("asr:audio:index", 0, -1)
        with TestClient(create_app(settings)) as client:
            with open(SPEECH_WAV, "rb") as fh:
                resp = client.post("/api/v1/asr/submit", files={"audio": ("a.wav", fh)})
            assert resp.status_code == 507, resp.text
            assert resp.json()["error"].startswith("Insufficient storage")
            assert list(mount.iterdir()) == []
            assert conn.llen("rq:queue:asr-disk") == 0
            assert conn.zrange("asr:audio:index", 0, -1) == index_before
            assert set(conn.scan_iter("asr:task:*")) == tasks_before
        record(
            "disk full while saving an upload",
            recovery_s=0,
            outcome="507 JSON; partial file removed; no task, no job",
        )
