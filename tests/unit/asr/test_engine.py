"""src/asr/engine.py: the out-of-memory retry, which faults cannot trigger here (no GPU to run
out of memory). First a fake recognizer stands in for SpeechRecognizer; then the real one, on the
tiny models, with its model's `generate` raising torch's own out-of-memory error. No real
allocation ever fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from src.asr.engine import recognize_with_oom_retry
from src.asr.recognizer import RecognitionError, SpeechRecognizer, Transcript
from src.engine.interface import EngineInput
from tests.support.audio_samples import SPEECH_WAV


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


# --- torch's own error, raised inside the real recognizer --------------------------------------
# No GPU here to exhaust: the tiny model's `generate` is wrapped to raise the exception torch
# raises when CUDA runs out of memory. What turns it into a retry (engine_error's classification,
# SpeechRecognizer's wrapping, the quarter batch) is the real code.

TORCH_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def failing_generate(
    recognizer: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch, failures: list[Exception]
) -> list[int]:
    """Make the next calls of the model's `generate` raise `failures`, then run it for real;
    returns the batch_size_s of every call."""
    original = recognizer._model.generate
    batches: list[int] = []

    def generate(*args: Any, **kwargs: Any) -> Any:
        batches.append(kwargs["batch_size_s"])
        if failures:
            raise failures.pop(0)
        return original(*args, **kwargs)

    monkeypatch.setattr(recognizer._model, "generate", generate)
    return batches


def test_torchs_out_of_memory_error_is_retried_at_a_quarter_of_the_batch(
    recognizer: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
):
    expected = recognizer.recognize(SPEECH_WAV).text
    batches = failing_generate(recognizer, monkeypatch, [torch.OutOfMemoryError(TORCH_OOM)])
    result = recognize_with_oom_retry(recognizer, EngineInput("t", SPEECH_WAV, batch_size_s=400))
    assert batches == [400, 100]
    assert result.text == expected


def test_a_second_torch_out_of_memory_error_fails_the_job(
    recognizer: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
):
    oom = [torch.OutOfMemoryError(TORCH_OOM), torch.OutOfMemoryError(TORCH_OOM)]
    batches = failing_generate(recognizer, monkeypatch, oom)
    with pytest.raises(RecognitionError) as caught:
        recognize_with_oom_retry(recognizer, EngineInput("t", SPEECH_WAV, batch_size_s=400))
    assert batches == [400, 100]
    assert caught.value.out_of_memory
    assert str(caught.value) == f"OutOfMemoryError: {TORCH_OOM}"


def test_a_model_error_inside_the_recognizer_is_not_retried(
    recognizer: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
):
    shape = RuntimeError("The size of tensor a (560) must match the size of tensor b (400)")
    batches = failing_generate(recognizer, monkeypatch, [shape])
    with pytest.raises(RecognitionError) as caught:
        recognize_with_oom_retry(recognizer, EngineInput("t", SPEECH_WAV, batch_size_s=400))
    assert batches == [400]
    assert not caught.value.out_of_memory
