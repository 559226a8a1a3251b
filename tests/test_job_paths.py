"""The job function paths RQ stores in Redis are plain strings, so a moved or renamed function
would only fail in a worker, on a real job. These resolve them the way RQ does."""

from __future__ import annotations

import pytest
from rq.utils import import_attribute

from src.queue import job_queue


@pytest.mark.parametrize("path", [job_queue.JOB_FUNC, job_queue.FAILURE_CALLBACK])
def test_each_stored_job_path_resolves_to_a_callable(path: str):
    assert callable(import_attribute(path)), path


def test_job_paths_point_at_the_worker_side_job_module():
    """The API enqueues by name and never imports this module; only workers run it."""
    assert job_queue.JOB_FUNC.rsplit(".", 1)[0] == "src.worker.jobs"
    assert job_queue.FAILURE_CALLBACK.rsplit(".", 1)[0] == "src.worker.jobs"
