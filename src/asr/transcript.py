"""What the recognizer returns and raises; shared by the recognizer and its pooled batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from src.engine.interface import EngineError
from src.vocabulary import Sentence, Stage

# FunASR divides by the input's duration in its timing code and fails on inputs shorter than
# 400 samples (25 ms); anything this short holds no speech anyway.
MIN_SAMPLES = 800

ProgressFn = Callable[[Stage, float], None]
"""Called with the current stage and overall progress in [0, 1]."""


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float
    sentences: list[Sentence]
    speech_segments: list[tuple[int, int]]
    hotwords: list[str]
    rtf: float
    processing_time: float
    language: str
    models: dict[str, str] = field(default_factory=dict)


class RecognitionError(EngineError):
    """The engine failed on audio that decoded fine (model error, out of memory)."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM (torch.OutOfMemoryError), host MemoryError, or the RuntimeError text of both."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def engine_error(exc: Exception) -> RecognitionError:
    """A FunASR/torch exception as the client may see it: type and a bounded message."""
    message = f"{type(exc).__name__}: {str(exc)[:300]}"
    return RecognitionError(message, out_of_memory=is_out_of_memory(exc))
