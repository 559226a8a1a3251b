"""The one interface between the job core and whatever does the work on an upload.

The worker (src/worker) loads one engine per process, by the dotted path in
`Settings.worker_engine`, and hands it one task at a time, or several when the engine can pool
them. Nothing in the job core imports an engine: the ASR engine (src/asr/engine.py) pulls in
torch and FunASR, and the tests run the whole service with an engine that only measures
duration and loudness (tests/support/loudness_engine.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from src.config import Settings
from src.vocabulary import Sentence, Stage

ProgressFn = Callable[[Stage, float], None]
"""Called with the current stage and overall progress in [0, 1]."""


@dataclass(frozen=True)
class EngineInput:
    """One task for the engine: its stored recording and the options the client chose."""

    task_id: str
    path: Path
    language: str = "zh"
    hotwords: tuple[str, ...] = ()
    batch_size_s: int = 500
    progress: ProgressFn | None = None


@dataclass(frozen=True)
class EngineOutput:
    """What the job core stores for a task: text, timed sentences, and the cost of making it."""

    text: str
    duration: float
    processing_time: float
    sentences: list[Sentence] = field(default_factory=list)
    hotwords: list[str] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        """Real-time factor: processing seconds per second of input."""
        return round(self.processing_time / self.duration, 4) if self.duration else 0.0


@dataclass(frozen=True)
class EngineInfo:
    """What /health shows for a worker's engine."""

    device: str
    models: dict[str, str]
    load_time: float
    gpu: str | None = None
    """The GPU's name (e.g. "NVIDIA H100 80GB HBM3") when `device` is one: which box is which."""


class EngineError(RuntimeError):
    """The engine failed on an input that decoded fine. Its message is shown to the client, so
    it names the failure without paths or tracebacks."""


@runtime_checkable
class Engine(Protocol):
    """Loaded once per worker process; then `process` runs for each task.

    `max_batch` > 1 means `process_batch` pools that many short inputs in one pass (the worker
    claims queued tasks for it); an engine that cannot pool sets 1 and the worker never calls it.
    """

    info: EngineInfo
    max_batch: int

    def process(self, item: EngineInput) -> EngineOutput:
        """Raise `src.media.audio.AudioError` for unusable input, `EngineError` for the rest."""
        ...

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        """One result per input, in order; one bad input never fails the others."""
        ...


EngineLoader = Callable[[Settings], Engine]


def loader_module(spec: str) -> str:
    """The module of a 'package.module:function' spec, which the supervisor imports before it
    forks so that every worker starts with it."""
    return spec.partition(":")[0]


def load_engine(settings: Settings) -> Engine:
    """Import `Settings.worker_engine` ('module:function') and call it with the settings."""
    module, _, name = settings.worker_engine.partition(":")
    loader: EngineLoader = getattr(importlib.import_module(module), name)
    engine = loader(settings)
    if not isinstance(engine, Engine):
        raise TypeError(f"{settings.worker_engine} returned {type(engine).__name__}, not an Engine")
    return engine
