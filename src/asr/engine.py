"""The ASR engine as the worker sees it: `SpeechRecognizer` behind `src.engine.interface.Engine`.

`Settings.worker_engine` names `load` here by default. Importing this module imports torch and
FunASR, which is why only worker processes (and the supervisor, before it forks) do.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from src.asr.recognizer import BatchRequest, RecognitionError, SpeechRecognizer, Transcript
from src.config import Settings
from src.engine.interface import EngineInfo, EngineInput, EngineOutput

log = logging.getLogger(__name__)

PRELOAD = ("torch", "src.asr.funasr_import")
"""Imported by the worker supervisor before it forks (src/worker/supervisor.py): about 14 s of a
fresh worker's start, which every fork then shares. FunASR comes through src/asr/funasr_import.py,
which keeps its import-time ffmpeg notice out of the log."""

OOM_BATCH_DIVISOR = 4

PIPELINE_WAVES = 4
"""With prep processes a pooled pass claims this many waves of ASR_BATCH_JOBS clips: the pool
prepares the next wave while the ASR model runs the one before."""


def output(transcript: Transcript) -> EngineOutput:
    return EngineOutput(
        text=transcript.text,
        duration=transcript.duration,
        processing_time=transcript.processing_time,
        sentences=transcript.sentences,
        hotwords=transcript.hotwords,
    )


def gpu_name(device: str) -> str | None:
    """The name of the GPU `device` is, or None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


class SpeechEngine:
    """FunASR's VAD + Paraformer + punctuation, loaded once, with cross-job pooling."""

    def __init__(self, recognizer: SpeechRecognizer, max_batch: int) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.info = EngineInfo(
            device=recognizer.device,
            models=dict(recognizer.model_ids),
            load_time=round(recognizer.load_time, 3),
            gpu=gpu_name(recognizer.device),
        )

    def process(self, item: EngineInput) -> EngineOutput:
        return output(recognize_with_oom_retry(self.recognizer, item))

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        requests = [
            BatchRequest(
                audio=item.path,
                language=item.language,
                batch_size_s=item.batch_size_s,
                hotwords=item.hotwords,
                progress=item.progress,
            )
            for item in items
        ]
        results = self.recognizer.recognize_batch(requests)
        return [output(r) if isinstance(r, Transcript) else r for r in results]


def recognize_with_oom_retry(recognizer: SpeechRecognizer, item: EngineInput) -> Transcript:
    """Out of memory usually means the batch was too big: try once more with a quarter of it."""
    try:
        return recognizer.recognize(
            item.path,
            language=item.language,
            batch_size_s=item.batch_size_s,
            hotwords=item.hotwords,
            progress=item.progress,
        )
    except RecognitionError as exc:
        if not exc.out_of_memory:
            raise
        smaller = max(1, item.batch_size_s // OOM_BATCH_DIVISOR)
        log.warning(
            "task=%s out of memory at batch_size=%ss; retrying once at %ss",
            item.task_id,
            item.batch_size_s,
            smaller,
        )
        gc.collect()
        return recognizer.recognize(
            item.path,
            language=item.language,
            batch_size_s=smaller,
            hotwords=item.hotwords,
            progress=item.progress,
        )


def load(settings: Settings) -> SpeechEngine:
    """`Settings.worker_engine`'s default: load the models named in the settings."""
    recognizer = SpeechRecognizer.from_settings(settings)
    waves = PIPELINE_WAVES if recognizer.prep_pool is not None else 1
    return SpeechEngine(recognizer, settings.batch_jobs * waves)
