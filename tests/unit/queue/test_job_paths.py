"""The job function paths RQ stores in Redis are plain strings, so a moved or renamed function
would only fail in a worker, on a real job. These resolve them the way RQ does."""

from __future__ import annotations

import pytest
import redis
from rq.job import Callback, Job
from rq.utils import import_attribute

from src.config import Settings
from src.queue import job_queue


@pytest.mark.parametrize("path", [job_queue.JOB_FUNC, job_queue.FAILURE_CALLBACK])
def test_each_stored_job_path_resolves_to_a_callable(path: str):
    assert callable(import_attribute(path)), path


def test_job_paths_point_at_the_worker_side_job_module():
    """The API enqueues by name and never imports this module; only workers run it."""
    assert job_queue.JOB_FUNC.rsplit(".", 1)[0] == "src.worker.jobs"
    assert job_queue.FAILURE_CALLBACK.rsplit(".", 1)[0] == "src.worker.jobs"


def test_every_legacy_path_maps_to_one_that_resolves():
    for old, new in job_queue.LEGACY_PATHS.items():
        assert new in (job_queue.JOB_FUNC, job_queue.FAILURE_CALLBACK), old
        assert callable(import_attribute(new))


def test_jobs_queued_by_an_earlier_release_are_pointed_at_todays_functions(
    conn: redis.Redis, settings: Settings
):
    """An upgrade with a non-empty queue: RQ would fail these jobs on an import error."""
    queue = job_queue.get_queue(conn, settings)
    old = queue.enqueue(
        "src.asr.jobs.transcribe",
        "t-old",
        job_id="t-old",
        on_failure=Callback("src.asr.jobs.on_failure"),
    )
    older = queue.enqueue("src.api.tasks.transcribe", "t-older", job_id="t-older")
    current = job_queue.enqueue_task(queue, "t-new", settings)

    assert sorted(job_queue.migrate_legacy_jobs(queue)) == ["t-old", "t-older"]

    for job_id in ("t-old", "t-older", "t-new"):
        job = Job.fetch(job_id, connection=conn)
        assert job.func_name == job_queue.JOB_FUNC
        assert job.args == (job_id,)
    assert Job.fetch("t-old", connection=conn).failure_callback is not None
    assert Job.fetch("t-old", connection=conn)._failure_callback_name == job_queue.FAILURE_CALLBACK
    assert queue.job_ids == [old.id, older.id, current.id]  # same places in the queue
    assert job_queue.migrate_legacy_jobs(queue) == []
