"""A second engine, for tests only: an upload's duration and loudness, with no ASR code.

Run by `WORKER_ENGINE=tests.support.loudness_engine:load` through the whole real service
(tests/system/test_second_engine.py), it shows that the job core, the worker and the API need
nothing of speech recognition: only src/engine/interface.py and PyAV decoding (src/media/audio.py).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import numpy as np

from src.config import Settings
from src.engine.interface import EngineError, EngineInfo, EngineInput, EngineOutput
from src.media.audio import SAMPLE_RATE, load_audio
from src.vocabulary import Sentence, Stage

# Seconds of work per second of audio, so a test can catch a job mid-flight and kill its worker.
DELAY_ENV = "LOUDNESS_DELAY_PER_AUDIO_S"


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (float samples in [-1, 1])."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class LoudnessEngine:
    """Duration, overall level and a level per second, as the task's text and sentences.

    Its "batch" pass runs the inputs one after another in one call, each sleeping its delay, so
    a test can kill a worker in the middle of a cross-job batch at a known point.
    """

    def __init__(
        self, max_audio_seconds: float, delay_per_audio_s: float, max_batch: int = 1
    ) -> None:
        self.max_audio_seconds = max_audio_seconds
        self.delay_per_audio_s = delay_per_audio_s
        self.max_batch = max_batch
        self.info = EngineInfo(device="cpu", models={"loudness": "rms-dbfs"}, load_time=0.0)

    def process(self, item: EngineInput) -> EngineOutput:
        started = time.perf_counter()
        report = item.progress or (lambda stage, fraction: None)
        report(Stage.DECODE, 0.0)
        samples, _ = load_audio(item.path, max_duration_s=self.max_audio_seconds)
        duration = len(samples) / SAMPLE_RATE
        level = dbfs(samples)
        if math.isinf(level):
            raise EngineError("no signal: the recording is digital silence")
        sentences = []
        seconds = math.ceil(duration)
        for second in range(seconds):
            window = samples[second * SAMPLE_RATE : (second + 1) * SAMPLE_RATE]
            end_ms = min((second + 1) * 1000, round(duration * 1000))
            text = f"{dbfs(window):.1f} dBFS"
            sentences.append(Sentence(text=text, start=second * 1000, end=end_ms))
            time.sleep(self.delay_per_audio_s)
            report(Stage.RECOGNITION, (second + 1) / seconds)
        return EngineOutput(
            text=f"{duration:.2f} s at {level:.1f} dBFS",
            duration=round(duration, 3),
            processing_time=round(time.perf_counter() - started, 3),
            sentences=sentences,
        )

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        results: list[EngineOutput | Exception] = []
        for item in items:
            try:
                results.append(self.process(item))
            except Exception as exc:
                results.append(exc)
        return results


def load(settings: Settings) -> LoudnessEngine:
    """Batches only when ASR_BATCH_JOBS is set: the device default (4 on CPU) is FunASR's."""
    return LoudnessEngine(
        settings.asr_max_audio_seconds,
        float(os.environ.get(DELAY_ENV, "0") or 0),
        max_batch=settings.asr_batch_jobs or 1,
    )
