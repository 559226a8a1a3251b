"""The service raises domain errors and the API alone picks their status: an error class left out
of the table would answer a bare 500, so every one must be in it."""

from __future__ import annotations

import inspect
import json

from src.api.errors import SERVICE_ERROR_STATUS
from src.service import errors


def domain_errors() -> list[type[errors.ServiceError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError
    ]


def test_every_domain_error_has_a_status():
    assert domain_errors()
    assert set(domain_errors()) == set(SERVICE_ERROR_STATUS)


def test_a_domain_error_keeps_its_context_keys_in_body_order():
    exc = errors.TaskNotFailed(task_id="t1", status="done")
    assert str(exc) == "Only a failed task can be retried"
    assert json.dumps({"error": str(exc), **exc.context()}) == (
        '{"error": "Only a failed task can be retried", "task_id": "t1", "status": "done"}'
    )


def test_audio_too_long_reads_as_the_decoders_sentence():
    exc = errors.AudioTooLong("audio is 700.0 s long; the limit is 600 s")
    assert str(exc) == "audio is 700.0 s long; the limit is 600 s"
    assert exc.context() == {"reason": "too_long"}
    assert errors.StorageFull().context() == {}
