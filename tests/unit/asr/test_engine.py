"""src/asr/engine.py: the out-of-memory retry, which faults cannot trigger here (no GPU to run
out of memory): a fake recognizer stands in for SpeechRecognizer, everything else is the real
code."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.asr.engine import recognize_with_oom_retry
from src.asr.recognizer import RecognitionError, Transcript
from src.engine.interface import EngineInput


class FakeRecognizer:
    def __init__(self, failures: list[RecognitionError]) -> None:
        self.failures = failures
        self.batches: list[int] = []

    def recognize(self, path: Path, *, batch_size_s: int, **_: object) -> Transcript:
        self.batches.append(batch_size_s)
        if self.failures:
            raise self.failures.pop(0)
        return Transcript("ok", 1.0, [], [], [], 0.1, 0.1, "zh")


def item(batch: int = 400) -> EngineInput:
    return EngineInput(task_id="t", path=Path("x"), batch_size_s=batch)


def test_out_of_memory_is_retried_once_with_a_smaller_batch():
    fake = FakeRecognizer([RecognitionError("CUDA out of memory", out_of_memory=True)])
    result = recognize_with_oom_retry(fake, item(400))  # type: ignore[arg-type]
    assert result.text == "ok"
    assert fake.batches == [400, 100]


def test_a_second_out_of_memory_fails_the_job():
    oom = [RecognitionError("oom", out_of_memory=True), RecognitionError("oom", out_of_memory=True)]
    fake = FakeRecognizer(oom)
    with pytest.raises(RecognitionError):
        recognize_with_oom_retry(fake, item(400))  # type: ignore[arg-type]
    assert fake.batches == [400, 100]


def test_other_errors_are_not_retried():
    fake = FakeRecognizer([RecognitionError("shape mismatch")])
    with pytest.raises(RecognitionError):
        recognize_with_oom_retry(fake, item())  # type: ignore[arg-type]
    assert len(fake.batches) == 1
