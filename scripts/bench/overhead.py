"""Figure 2a: queue overhead per job = end-to-end time minus the recognizer's own time.

Jobs are sent one at a time (so no job waits behind another) and each is polled through the API
every `poll_s` until done, as a client would. Per job:

* server overhead = finished_at - created_at - processing_time (task record timestamps; created_at
  is taken when submit starts, so this includes storing and checking the upload, enqueueing, the
  worker's pick-up and the job's own bookkeeping before finished_at is written);
* client overhead = (done seen by the client - submit sent) - processing_time (adds HTTP, upload
  and up to one poll interval);
* its parts: submit response time, queue wait (started_at - created_at), and in-job time outside
  the recognizer (finished_at - started_at - processing_time).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import redis

from scripts.bench.client import SUBMIT, Upload, record_of
from scripts.bench.common import CpuWatch, log, summary, wait_quiet
from scripts.bench.stack import Stack


def _rq_times(conn: redis.Redis, job_id: str) -> dict[str, float | None]:
    """RQ's own timestamps for the job (enqueued_at, started_at, ended_at), epoch seconds."""
    from rq.utils import utcparse  # not at the top: the GPU engine-only run has no rq

    raw = conn.hmget(f"rq:job:{job_id}", ["enqueued_at", "started_at", "ended_at"])
    return {
        name: utcparse(value.decode()).timestamp() if value else None
        for name, value in zip(("enqueued", "started", "ended"), raw, strict=True)
    }


def run(
    stack: Stack, clip: Path, jobs: int, quiet_s: float, poll_s: float = 0.01
) -> dict[str, Any]:
    assert stack.api is not None
    upload = Upload.of(clip)
    conn = stack.conn()
    rows = []
    background = wait_quiet(stack.pids(), quiet_s)
    watch = CpuWatch(stack.pids())
    with httpx.Client(base_url=stack.api.url, timeout=60) as client:
        client.get("/api/v1/health")
        for i in range(jobs + 1):  # the first job warms the path up and is not counted
            t0 = time.time()
            p0 = time.perf_counter()
            resp = client.post(SUBMIT, content=upload.body, headers=upload.headers)
            submit_s = time.perf_counter() - p0
            resp.raise_for_status()
            task_id = resp.json()["task_id"]
            while True:
                body = client.get(f"/api/v1/asr/result/{task_id}").json()
                if body["status"] in ("done", "failed"):
                    break
                time.sleep(poll_s)
            seen = time.perf_counter() - p0
            rec = record_of(conn, task_id)
            if rec is None or rec.status != "done" or rec.processing is None:
                raise RuntimeError(f"overhead job {task_id} did not finish: {body}")
            assert rec.started is not None and rec.finished is not None
            if i == 0:
                continue
            rq_t = _rq_times(conn, task_id)
            enq, rq_start, rq_end = rq_t["enqueued"], rq_t["started"], rq_t["ended"]
            rows.append(
                {
                    "processing_s": rec.processing,
                    "client_e2e_s": seen,
                    "client_overhead_s": seen - rec.processing,
                    "server_overhead_s": rec.finished - rec.created - rec.processing,
                    "submit_s": submit_s,
                    "queue_wait_s": rec.started - rec.created,
                    "in_job_outside_engine_s": rec.finished - rec.started - rec.processing,
                    "created_after_send_s": rec.created - t0,
                    # created -> enqueued: the API storing and checking the upload
                    "api_before_enqueue_s": (enq - rec.created) if enq else None,
                    # enqueued -> RQ started: the queue itself (BLPOP wake-up, job fetch)
                    "rq_pickup_s": (rq_start - enq) if enq and rq_start else None,
                    # RQ started -> task started_at: job load, record read
                    "job_start_s": (rec.started - rq_start) if rq_start else None,
                    # finished_at -> RQ ended: history, stats, retention after the result
                    "after_finished_s": (rq_end - rec.finished) if rq_end else None,
                }
            )
    cpu = watch.stop()

    def col(name: str) -> list[float]:
        return [r[name] for r in rows if r[name] is not None]

    out = {
        "clip": {"file": clip.name, "seconds": 10},
        "jobs": len(rows),
        "poll_interval_ms": poll_s * 1000,
        "server_overhead_ms": summary(col("server_overhead_s"), 1000),
        "client_overhead_ms": summary(col("client_overhead_s"), 1000),
        "parts_ms": {
            "submit_response": summary(col("submit_s"), 1000),
            "queue_wait": summary(col("queue_wait_s"), 1000),
            "in_job_outside_engine": summary(col("in_job_outside_engine_s"), 1000),
            "api_before_enqueue": summary(col("api_before_enqueue_s"), 1000),
            "rq_pickup": summary(col("rq_pickup_s"), 1000),
            "job_start": summary(col("job_start_s"), 1000),
            "after_finished": summary(col("after_finished_s"), 1000),
        },
        "processing_ms": summary(col("processing_s"), 1000),
        "background_cores_before": background,
        "cpu": cpu,
    }
    log(
        f"overhead: server median {out['server_overhead_ms']['p50']} ms "
        f"(p95 {out['server_overhead_ms']['p95']}), client median "
        f"{out['client_overhead_ms']['p50']} ms, engine median {out['processing_ms']['p50']} ms"
    )
    return out
