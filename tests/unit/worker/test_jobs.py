"""src/worker/jobs.py: what a failed job tells the client (the job function itself runs in
tests/unit/worker/test_context.py and, in real workers, in tests/system)."""

from __future__ import annotations

from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from src.asr.recognizer import RecognitionError
from src.engine.interface import EngineError
from src.media.audio import AudioError
from src.results.metrics import FAILURE_REASONS, FailureReason
from src.worker.jobs import RecordingMissingError, describe_failure, failure_reason


def test_failure_messages():
    wrapped = RecognitionError("JobTimeoutException: ...")
    wrapped.__cause__ = JobTimeoutException("Task exceeded maximum timeout value (600 seconds)")
    assert describe_failure(RecognitionError, wrapped, 600) == "Processing timeout (600s exceeded)"
    timeout = JobTimeoutException("x")
    assert describe_failure(JobTimeoutException, timeout, 9) == "Processing timeout (9s exceeded)"
    assert describe_failure(KeyError, KeyError("/secret/path"), 1) == "Recognition failed: KeyError"


def test_failure_reasons_are_a_bounded_set():
    timeout = JobTimeoutException("Task exceeded maximum timeout value (600 seconds)")
    wrapped = RecognitionError("JobTimeoutException: ...")
    wrapped.__cause__ = timeout
    cases: list[tuple[BaseException, FailureReason]] = [
        (timeout, "timeout"),
        (wrapped, "timeout"),
        (AudioError("corrupt", "damaged at 3.2 s"), "invalid_audio"),
        (RecordingMissingError("gone"), "recording_missing"),
        (EngineError("no signal"), "engine_error"),
        (RecognitionError("CUDA error"), "engine_error"),
        (AbandonedJobError(), "abandoned"),
        (KeyError("/secret/path"), "other"),
    ]
    for exc, reason in cases:
        assert failure_reason(type(exc), exc) == reason, exc
        assert reason in FAILURE_REASONS
    # The client's message follows the same classification.
    messages = [describe_failure(type(exc), exc, 600) for exc, _ in cases]
    assert messages == [
        "Processing timeout (600s exceeded)",
        "Processing timeout (600s exceeded)",
        "Invalid audio: damaged at 3.2 s",
        "The recording was deleted before it could be processed",
        "Recognition failed: no signal",
        "Recognition failed: CUDA error",
        "The worker stopped while processing this task",
        "Recognition failed: KeyError",
    ]
