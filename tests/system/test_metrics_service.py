"""/metrics on a live service after real jobs: a real uvicorn, a private redis-server and the two
`python -m src.worker` processes of the `service` fixture, running FunASR on the tiny models.

Both workers are kept busy with long recordings while short ones and a doomed one (its recording
deleted before a worker reaches it) queue behind them; the scrapes are parsed with
prometheus_client's text parser and checked against what the test did and what Redis, the task
records and RQ's job hashes say happened.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.job import Job

from src.records import task_store
from src.records.task_store import TaskRecord
from src.results.metrics import FAILURE_REASONS
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_long
from tests.support.fixtures import Service
from tests.support.processes import ApiProcess, api_env, wait_for
from tests.support.prometheus import Scrape

pytestmark = pytest.mark.slow

RESULT = "/api/v1/asr/result/{task_id}"
SUBMIT = "/api/v1/asr/submit"
SHORT_JOBS = 3


class Api:
    """An httpx client on the live API that counts the answers it got, by route and status."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self.answers: Counter[tuple[str, int]] = Counter()

    def submit(self, path: Path) -> str:
        with open(path, "rb") as fh:
            resp = self.http.post(SUBMIT, files={"audio": (path.name, fh)})
        self.answers[SUBMIT, resp.status_code] += 1
        assert resp.status_code == 200, resp.text
        return str(resp.json()["task_id"])

    def result(self, task_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/v1/asr/result/{task_id}")
        self.answers[RESULT, resp.status_code] += 1
        return dict(resp.json())

    def wait(self, task_id: str, statuses: set[str], timeout: float = 300) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.result(task_id)
            return body if body["status"] in statuses else None

        return wait_for(reached, timeout, 0.2, f"{task_id} in {statuses}")  # type: ignore[return-value]

    def scrape(self) -> Scrape:
        resp = self.http.get("/metrics")
        assert resp.status_code == 200, resp.text
        return Scrape(resp.text)


@pytest.fixture(scope="module")
def api(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = api_env(service.redis_server.port, service.storage)
    process = ApiProcess(env, tmp_path_factory.mktemp("metrics-api") / "api.log").start()
    client = Api(process.url)
    try:
        yield client
    finally:
        client.http.close()
        process.stop()


def records(service: Service, ids: list[str]) -> list[TaskRecord]:
    conn = service.redis_server.client()
    found = [task_store.load(conn, task_id) for task_id in ids]
    assert all(found), ids
    return found  # type: ignore[return-value]


def waited(service: Service, ids: list[str]) -> float:
    """Each job's start less its last enqueue, from its record and RQ's job hash."""
    conn = service.redis_server.client()
    total = 0.0
    for record in records(service, ids):
        enqueued = Job.fetch(record.task_id, connection=conn).enqueued_at
        assert record.started_at is not None and enqueued is not None
        total += (record.started_at - enqueued).total_seconds()
    return total


def test_metrics_after_real_jobs_match_what_happened(
    api: Api, service: Service, tmp_path: Path
) -> None:
    before = api.scrape()
    assert before.value("asr_workers_ready") == 2

    long_clip = make_long(SPEECH_WAV, tmp_path, seconds=600, fmt="flac")
    long_ids = [api.submit(long_clip) for _ in range(2)]
    for task_id in long_ids:
        api.wait(task_id, {"processing"}, 60)
    # Both workers busy with clips too long to batch: what comes next waits in the queue.
    doomed = api.submit(SPEECH_WAV)
    (recording,) = (service.storage / "recordings").glob(f"{doomed}.*")
    recording.unlink()  # gone before a worker reaches it: it fails as recording_missing
    short_ids = [api.submit(SPEECH_OGG if n % 2 else SPEECH_WAV) for n in range(SHORT_JOBS)]

    busy = api.scrape()
    assert [api.result(t)["status"] for t in long_ids] == ["processing"] * 2, "too fast"
    # Voice notes are in the high lane (the API runs with the default duration rule).
    assert busy.value("asr_queue_depth", lane="high") == 1 + SHORT_JOBS
    assert busy.value("asr_queue_depth", lane="normal") == 0
    assert 0 < busy.value("asr_queue_oldest_age_seconds", lane="high") < 60
    # Beacons carry the running task; they are refreshed every 5 s.
    wait_for(lambda: api.scrape().value("asr_workers_busy") == 2, 15, 0.5, "2 busy workers")

    for task_id in [*long_ids, *short_ids]:
        assert api.wait(task_id, {"done", "failed"})["status"] == "done"
    failed = api.wait(doomed, {"done", "failed"})
    assert failed["status"] == "failed" and "deleted" in failed["error"]
    wait_for(lambda: api.scrape().value("asr_workers_busy") == 0, 15, 0.5, "idle workers")
    after = api.scrape()

    def delta(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    done_ids = [*long_ids, *short_ids]
    done = records(service, done_ids)
    assert delta("asr_tasks_submitted_total") == 3 + SHORT_JOBS
    assert delta("asr_jobs_done_total") == len(done_ids)
    assert {r: delta("asr_job_failures_total", reason=r) for r in FAILURE_REASONS} == {
        r: (1 if r == "recording_missing" else 0) for r in FAILURE_REASONS
    }
    for lane in ("high", "normal", "low"):
        assert after.value("asr_queue_depth", lane=lane) == 0
        assert after.value("asr_queue_oldest_age_seconds", lane=lane) == 0

    # Every job that started waited: the done ones and the doomed one.
    assert delta("asr_job_wait_seconds_count") == len(done_ids) + 1
    assert delta("asr_job_wait_seconds_sum") == pytest.approx(
        waited(service, [*done_ids, doomed]), abs=0.01
    )
    assert delta("asr_job_wait_seconds_bucket", le="1.0") < delta("asr_job_wait_seconds_count")
    # Processing and RTF: the jobs that finished done.
    assert delta("asr_job_processing_seconds_count") == len(done_ids)
    took = sum((r.finished_at - r.started_at).total_seconds() for r in done)  # type: ignore[operator]
    assert delta("asr_job_processing_seconds_sum") == pytest.approx(took, abs=0.01)
    assert delta("asr_job_rtf_count") == len(done_ids)
    rtf = sum(r.rtf or 0.0 for r in done)
    assert delta("asr_job_rtf_sum") == pytest.approx(rtf, abs=1e-3 * len(done))
    assert delta("asr_audio_seconds_total") == pytest.approx(sum(r.duration or 0 for r in done))
    # Each done job ran in exactly one engine pass, alone or batched.
    passes, jobs = delta("asr_batch_size_count"), delta("asr_batch_size_sum")
    assert jobs == len(done_ids) and 1 <= passes <= jobs
    assert delta("asr_batch_size_bucket", le="1.0") >= 2  # the two long clips, alone

    conn = service.redis_server.client()
    assert after.value("asr_workers_ready") == 2
    load = "asr_worker_model_load_seconds"
    for worker in service.workers:  # as the worker published it, after its model load
        raw = conn.get(f"asr:worker:{worker.name}")
        assert raw is not None
        load_time = float(json.loads(raw)["load_time"])
        assert load_time > 0
        assert after.value(load, worker=worker.name, device="cpu") == load_time

    # The API's own requests, counted by this uvicorn process.
    requests = "asr_http_requests_total"
    assert (
        after.value(requests, method="POST", route=SUBMIT, status="200") == api.answers[SUBMIT, 200]
    )
    polls = api.answers[RESULT, 200]
    assert after.value(requests, method="GET", route=RESULT, status="200") == polls
    took_http = "asr_http_request_duration_seconds_count"
    assert after.value(took_http, method="GET", route=RESULT) == polls
    assert after.labels(requests, "route") >= {SUBMIT, RESULT, "/metrics"}
