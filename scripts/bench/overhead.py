"""Figure 2a: queue overhead per job = end-to-end time minus the recognizer's own time.

Jobs go one at a time (none waits behind another), each polled through the API every `poll_s`
as a client would. Server overhead comes from the task record's timestamps, client overhead from
what the client saw; the parts come from the record and RQ's own timestamps (PERFORMANCE.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from scripts.bench.client import SUBMIT, Upload, record_of
from scripts.bench.common import log, phase
from scripts.bench.results import Clip, OverheadFigure, Stats
from scripts.bench.stack import Stack

# The parts of a job's time: (start, end) from the task record and RQ's job hash.
PARTS = {
    "queue_wait": ("created", "started"),
    "in_job_outside_engine": ("started", "finished"),  # minus processing_time
    "api_before_enqueue": ("created", "rq_enqueued"),  # the API storing and checking the upload
    "rq_pickup": ("rq_enqueued", "rq_started"),  # the queue itself: BLPOP wake-up, job fetch
    "job_start": ("rq_started", "started"),  # job load, record read
    "after_finished": ("finished", "rq_ended"),  # history, stats, retention after the result
}


def _rq_times(conn: redis.Redis, job_id: str) -> dict[str, float | None]:
    """RQ's own timestamps for the job (enqueued_at, started_at, ended_at), epoch seconds."""
    from rq.utils import utcparse  # not at the top: the GPU engine-only run has no rq

    raw = conn.hmget(f"rq:job:{job_id}", ["enqueued_at", "started_at", "ended_at"])
    return {
        f"rq_{name}": utcparse(value.decode()).timestamp() if value else None
        for name, value in zip(("enqueued", "started", "ended"), raw, strict=True)
    }


def _span(t: dict[str, float | None], start: str, end: str) -> float | None:
    first, last = t[start], t[end]
    return None if first is None or last is None else last - first


def one_job(
    client: httpx.Client, conn: redis.Redis, upload: Upload, poll_s: float
) -> dict[str, float | None]:
    """Submit, poll until done; the job's spans in seconds (None where RQ lacks a timestamp)."""
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
    if rec is None or rec.status != "done" or rec.processing is None or rec.finished is None:
        raise RuntimeError(f"overhead job {task_id} did not finish: {body}")
    t: dict[str, float | None] = {"created": rec.created, "started": rec.started}
    t["finished"] = rec.finished
    t |= _rq_times(conn, task_id)
    spans = {name: _span(t, *ends) for name, ends in PARTS.items()}
    in_job = spans["in_job_outside_engine"]
    spans["in_job_outside_engine"] = None if in_job is None else in_job - rec.processing
    return {
        **spans,
        "submit_response": submit_s,
        "processing": rec.processing,
        "client_overhead": seen - rec.processing,
        "server_overhead": rec.finished - rec.created - rec.processing,
    }


def run(
    stack: Stack, clip: Path, jobs: int, quiet_s: float, poll_s: float = 0.01
) -> OverheadFigure:
    assert stack.api is not None
    upload = Upload.of(clip)
    conn = stack.conn()
    with (
        phase(stack.pids(), quiet_s) as measured,
        httpx.Client(base_url=stack.api.url, timeout=60) as client,
    ):
        client.get("/api/v1/health")
        one_job(client, conn, upload, poll_s)  # warms the path up; not counted
        rows = [one_job(client, conn, upload, poll_s) for _ in range(jobs)]

    def ms(name: str) -> Stats:
        return Stats.of([r[name] for r in rows if r[name] is not None], 1000)

    out = OverheadFigure(
        clip=Clip(file=clip.name, seconds=10),
        jobs=len(rows),
        poll_interval_ms=poll_s * 1000,
        server_overhead_ms=ms("server_overhead"),
        client_overhead_ms=ms("client_overhead"),
        parts_ms={name: ms(name) for name in ("submit_response", *PARTS)},
        processing_ms=ms("processing"),
        **dict(measured),
    )
    log(
        f"overhead: server median {out.server_overhead_ms.p50} ms (p95 "
        f"{out.server_overhead_ms.p95}), client median {out.client_overhead_ms.p50} ms, "
        f"engine median {out.processing_ms.p50} ms"
    )
    return out
