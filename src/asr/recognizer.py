"""SpeechRecognizer: FunASR's VAD + Paraformer + punctuation pipeline behind one small interface.

Only worker processes import this module: it pulls in torch and FunASR. The model is loaded once
per instance; `recognize` serialises calls because FunASR's `generate` mutates shared state.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from src.asr.audio import SAMPLE_RATE, AudioError, load_audio
from src.asr.config import Settings
from src.asr.hotwords import clean_hotwords, read_hotwords_file
from src.asr.models import resolve_model_dir

log = logging.getLogger(__name__)


class Stage(str, Enum):
    """Pipeline stages reported to a progress callback."""

    DECODE = "decode"
    VAD = "vad"
    RECOGNITION = "recognition"
    PUNCTUATION = "punctuation"
    DONE = "done"


# Share of the overall progress at which each stage starts.
_STAGE_START = {
    Stage.DECODE: 0.0,
    Stage.VAD: 0.10,
    Stage.RECOGNITION: 0.20,
    Stage.PUNCTUATION: 0.90,
    Stage.DONE: 1.0,
}

# FunASR divides by the input's duration in its timing code and fails on inputs shorter than
# 400 samples (25 ms); anything this short holds no speech anyway.
MIN_SAMPLES = 800

ProgressFn = Callable[[Stage, float], None]
"""Called with the current stage and overall progress in [0, 1]."""


@dataclass(frozen=True)
class Sentence:
    text: str
    start_ms: int
    end_ms: int


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _join_vad_texts_spaced(texts: Iterable[str]) -> str:
    """FunASR 1.4's `_join_vad_texts` glues Chinese VAD chunks without a space, after which its
    sentence splitter shifts every sentence's text by one token per pause (times stay right).
    Joining with spaces keeps the punctuated text the same and the sentences aligned."""
    cleaned = [re.sub(r"<\|[^|]*\|>", "", text).strip() for text in texts]
    return " ".join(text for text in cleaned if text)


def _patch_funasr() -> None:
    from funasr.auto import auto_model

    if hasattr(auto_model, "_join_vad_texts"):
        auto_model._join_vad_texts = _join_vad_texts_spaced


class RecognitionError(RuntimeError):
    """The engine failed on audio that decoded fine (model error, out of memory)."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM (torch.OutOfMemoryError), host MemoryError, or the RuntimeError text of both."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def resolve_device(requested: str) -> str:
    """Map 'cuda' to a device torch really has, else CPU, so a GPU-less box still serves."""
    import torch

    if requested.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; using cpu", requested)
        return "cpu"
    return requested


class SpeechRecognizer:
    """Loads ASR + VAD + punctuation once; `recognize` turns audio into a Transcript."""

    def __init__(
        self,
        *,
        asr_model: str,
        vad_model: str,
        punc_model: str,
        model_root: Path,
        device: str = "cpu",
        hotwords: Sequence[str] = (),
        max_audio_seconds: float | None = None,
        cpu_threads: int = 0,
    ) -> None:
        from funasr import AutoModel

        _patch_funasr()
        dirs = {
            "asr": resolve_model_dir(asr_model, model_root, role="ASR"),
            "vad": resolve_model_dir(vad_model, model_root, role="VAD"),
            "punc": resolve_model_dir(punc_model, model_root, role="punctuation"),
        }
        self.device = resolve_device(device)
        self.model_ids = {"asr": asr_model, "vad": vad_model, "punc": punc_model}
        self.model_dirs = dirs
        self.default_hotwords = clean_hotwords(hotwords)
        self.max_audio_seconds = max_audio_seconds
        self._lock = threading.Lock()
        self._progress: ProgressFn | None = None
        self._speech_ms_total = 0
        self._speech_ms_done = 0
        self._segments: list[tuple[int, int]] = []

        started = time.perf_counter()
        self._model = AutoModel(
            model=str(dirs["asr"]),
            vad_model=str(dirs["vad"]),
            punc_model=str(dirs["punc"]),
            device=self.device,
            ncpu=cpu_threads or os.cpu_count() or 1,
            disable_update=True,
            disable_pbar=True,
            disable_log=True,
        )
        self.load_time = time.perf_counter() - started
        self._install_progress_hook()
        log.info("models loaded on %s in %.2fs: %s", self.device, self.load_time, dirs)

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechRecognizer:
        return cls(
            asr_model=settings.asr_model,
            vad_model=settings.asr_vad_model,
            punc_model=settings.asr_punc_model,
            model_root=settings.asr_model_path,
            device=settings.device,
            hotwords=read_hotwords_file(settings.asr_hotwords_path),
            max_audio_seconds=settings.asr_max_audio_seconds,
            cpu_threads=settings.asr_cpu_threads,
        )

    def _install_progress_hook(self) -> None:
        """Wrap AutoModel.inference so each sub-model call (VAD, ASR batches, punc) reports.

        FunASR runs the whole pipeline inside one `generate` call; its sub-steps all go through
        `inference(model=...)`, which is the one seam that tells which stage is running.
        """
        auto = self._model
        original = auto.inference

        def tracked(input: Any, input_len: Any = None, model: Any = None, **kw: Any) -> Any:
            if model is auto.vad_model:
                self._report(Stage.VAD, 0.0)
                out = original(input, input_len=input_len, model=model, **kw)
                self._segments = [
                    (int(beg), int(end)) for item in out for beg, end in item.get("value", [])
                ]
                self._speech_ms_total = sum(end - beg for beg, end in self._segments)
                self._speech_ms_done = 0
                self._report(Stage.RECOGNITION, 0.0)
                return out
            if model is auto.punc_model:
                self._report(Stage.PUNCTUATION, 0.0)
                return original(input, input_len=input_len, model=model, **kw)
            out = original(input, input_len=input_len, model=model, **kw)
            if isinstance(input, list) and len(out) < len(input):
                # A VAD segment that decodes to no token comes back as no result at all, and
                # FunASR then blanks the whole transcript; an empty result keeps the rest.
                out = list(out) + [
                    {"key": f"empty-{i}", "text": "", "timestamp": []}
                    for i in range(len(input) - len(out))
                ]
            if isinstance(input, list):
                self._speech_ms_done += sum(len(x) for x in input) * 1000 // SAMPLE_RATE
            if self._speech_ms_total:
                self._report(
                    Stage.RECOGNITION, min(1.0, self._speech_ms_done / self._speech_ms_total)
                )
            return out

        auto.inference = tracked

    def _report(self, stage: Stage, within: float) -> None:
        if self._progress is None:
            return
        start = _STAGE_START[stage]
        nxt = {
            Stage.DECODE: Stage.VAD,
            Stage.VAD: Stage.RECOGNITION,
            Stage.RECOGNITION: Stage.PUNCTUATION,
            Stage.PUNCTUATION: Stage.DONE,
        }.get(stage)
        end = _STAGE_START[nxt] if nxt else 1.0
        try:
            self._progress(stage, start + (end - start) * within)
        except Exception:  # a broken reporter must not fail the transcription
            log.exception("progress callback failed at %s", stage.value)

    def recognize(
        self,
        audio: np.ndarray | str | os.PathLike[str] | bytes,
        *,
        language: str = "zh",
        batch_size_s: int = 500,
        hotwords: Sequence[str] = (),
        progress: ProgressFn | None = None,
    ) -> Transcript:
        """Transcribe one recording. Raises AudioError for unusable audio, RecognitionError else."""
        with self._lock:
            self._progress = progress
            try:
                return self._recognize(audio, language, batch_size_s, hotwords)
            finally:
                self._progress = None

    def _recognize(
        self,
        audio: np.ndarray | str | os.PathLike[str] | bytes,
        language: str,
        batch_size_s: int,
        extra_hotwords: Sequence[str],
    ) -> Transcript:
        started = time.perf_counter()
        self._report(Stage.DECODE, 0.0)
        if isinstance(audio, np.ndarray):
            samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        else:
            samples, _ = load_audio(audio, max_duration_s=self.max_audio_seconds)
        duration = len(samples) / SAMPLE_RATE
        if duration == 0:
            raise AudioError("empty", "The audio contains no samples")
        words = clean_hotwords([*self.default_hotwords, *extra_hotwords])
        self._segments = []
        if len(samples) < MIN_SAMPLES:
            return self._transcript({}, duration, words, language, started)

        kwargs: dict[str, Any] = {"batch_size_s": batch_size_s, "sentence_timestamp": True}
        if words:
            kwargs["hotword"] = " ".join(words)
        try:
            results = self._model.generate(input=samples, **kwargs)
        except Exception as exc:
            message = f"{type(exc).__name__}: {str(exc)[:300]}"
            raise RecognitionError(message, out_of_memory=is_out_of_memory(exc)) from exc

        # FunASR drops an input whose text came out empty (all silence): no result at all.
        return self._transcript(results[0] if results else {}, duration, words, language, started)

    def _transcript(
        self,
        result: dict[str, Any],
        duration: float,
        words: list[str],
        language: str,
        started: float,
    ) -> Transcript:
        sentences = [
            Sentence(
                text=str(s.get("text", "")).strip(),
                start_ms=max(0, int(s["start"])),
                end_ms=max(0, int(s["end"])),
            )
            for s in result.get("sentence_info", []) or []
            if str(s.get("text", "")).strip()
        ]
        elapsed = time.perf_counter() - started
        self._report(Stage.DONE, 0.0)
        return Transcript(
            text=str(result.get("text", "")).strip(),
            duration=round(duration, 3),
            sentences=sentences,
            speech_segments=list(self._segments),
            hotwords=words,
            rtf=round(elapsed / duration, 4),
            processing_time=round(elapsed, 3),
            language=language,
            models=dict(self.model_ids),
        )
