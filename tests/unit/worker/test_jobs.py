"""src/worker/jobs.py: what a failed job tells the client (the job function itself runs in
tests/unit/worker/test_context.py and, in real workers, in tests/system)."""

from __future__ import annotations

from rq.timeouts import JobTimeoutException

from src.asr.recognizer import RecognitionError
from src.worker.jobs import describe_failure


def test_failure_messages():
    wrapped = RecognitionError("JobTimeoutException: ...")
    wrapped.__cause__ = JobTimeoutException("Task exceeded maximum timeout value (600 seconds)")
    assert describe_failure(RecognitionError, wrapped, 600) == "Processing timeout (600s exceeded)"
    timeout = JobTimeoutException("x")
    assert describe_failure(JobTimeoutException, timeout, 9) == "Processing timeout (9s exceeded)"
    assert describe_failure(KeyError, KeyError("/secret/path"), 1) == "Recognition failed: KeyError"
