"""SpeechRecognizer: FunASR's VAD + Paraformer + punctuation pipeline behind one small interface.

Only worker processes import this module: it pulls in torch and FunASR. The model is loaded once
per instance; `recognize` serialises calls because FunASR's `generate` mutates shared state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.asr import funasr_patches, pooling
from src.asr.hotwords import clean_hotwords, read_hotwords_file
from src.asr.models import resolve_model_dirs
from src.asr.pooling import BatchRequest
from src.asr.prep import PrepPool, samples_of
from src.asr.transcript import (
    MIN_SAMPLES,
    ProgressFn,
    RecognitionError,
    Transcript,
    engine_error,
    is_out_of_memory,
)
from src.config import Settings
from src.media.audio import SAMPLE_RATE
from src.vocabulary import Sentence, Stage

__all__ = [
    "BatchRequest",
    "ProgressFn",
    "RecognitionError",
    "SpeechRecognizer",
    "Stage",
    "Transcript",
    "is_out_of_memory",
]

log = logging.getLogger(__name__)


# Share of the overall progress at which each stage starts.
_STAGE_START = {
    Stage.DECODE: 0.0,
    Stage.VAD: 0.10,
    Stage.RECOGNITION: 0.20,
    Stage.PUNCTUATION: 0.90,
    Stage.DONE: 1.0,
}


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
        # Before FunASR's import (seconds): a missing model is reported at once.
        named = {
            "asr": ("ASR_MODEL", asr_model),
            "vad": ("ASR_VAD_MODEL", vad_model),
            "punc": ("ASR_PUNC_MODEL", punc_model),
        }
        found = resolve_model_dirs(dict(named.values()), model_root)
        dirs = {role: found[key] for role, (key, _) in named.items()}
        from src.asr.funasr_import import funasr

        funasr_patches.patch_join_vad_texts()
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
        self._replay: pooling.Replay | None = None
        self.prep_pool: PrepPool | None = None
        self.wave_jobs = 0  # members per ASR wave of a pooled pass; 0: all in one wave

        started = time.perf_counter()
        self._model = funasr.AutoModel(
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
        if hasattr(self._model.model, "encode"):
            funasr_patches.zero_padded_frames(self._model.model)
        self._install_progress_hook()
        log.info("models loaded on %s in %.2fs: %s", self.device, self.load_time, dirs)

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechRecognizer:
        rec = cls(
            asr_model=settings.asr_model,
            vad_model=settings.asr_vad_model,
            punc_model=settings.asr_punc_model,
            model_root=settings.asr_model_path,
            device=settings.device,
            hotwords=read_hotwords_file(settings.asr_hotwords_path),
            max_audio_seconds=settings.asr_max_audio_seconds,
            cpu_threads=settings.cpu_threads,
        )
        if settings.prep_processes:
            rec.start_prep(settings.prep_processes, settings.batch_jobs)
        return rec

    def _install_progress_hook(self) -> None:
        """Wrap AutoModel.inference so each sub-model call (VAD, ASR batches, punc) reports.

        FunASR runs the whole pipeline inside one `generate` call; its sub-steps all go through
        `inference(model=...)`, which is the one seam that tells which stage is running.
        """
        auto = self._model
        original = auto.inference
        self._inference = original

        def tracked(input: Any, input_len: Any = None, model: Any = None, **kw: Any) -> Any:
            replay = self._replay
            if model is auto.vad_model:
                self._report(Stage.VAD, 0.0)
                if replay is not None:
                    out = replay.vad
                else:
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
            stored = replay.take(input) if replay is not None and isinstance(input, list) else None
            if stored is not None:
                out = stored
            else:
                out = original(input, input_len=input_len, model=model, **kw)
            out = funasr_patches.pad_empty_results(input, out)
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
        samples = self._samples(audio)
        duration = len(samples) / SAMPLE_RATE
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
            raise engine_error(exc) from exc

        # FunASR drops an input whose text came out empty (all silence): no result at all.
        return self._transcript(results[0] if results else {}, duration, words, language, started)

    def _samples(self, audio: np.ndarray | str | os.PathLike[str] | bytes) -> np.ndarray:
        return samples_of(audio, self.max_audio_seconds)

    def start_prep(self, processes: int, wave_jobs: int) -> None:
        """Pipeline `recognize_batch`: `processes` prep processes decode and cut the members
        (src/asr/prep.py) while the ASR model runs waves of `wave_jobs` of them."""
        self.stop_prep()
        self.prep_pool = PrepPool(self.model_dirs["vad"], processes, self.max_audio_seconds)
        self.wave_jobs = wave_jobs

    def stop_prep(self) -> None:
        """Back to preparing every member in this process, all in one wave."""
        if self.prep_pool is not None:
            self.prep_pool.close()
        self.prep_pool, self.wave_jobs = None, 0

    def recognize_batch(self, requests: Sequence[BatchRequest]) -> list[Transcript | Exception]:
        """Transcribe several recordings with their VAD segments pooled into shared ASR batches
        (src/asr/pooling.py). Each request gets its own Transcript or exception (AudioError,
        RecognitionError): one bad clip never fails the others, and members of a pooled ASR
        batch that failed are decoded again on their own.
        """
        with self._lock:
            try:
                return pooling.recognize_batch(self, requests)
            finally:
                self._progress = None
                self._replay = None

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
                start=max(0, int(s["start"])),
                end=max(0, int(s["end"])),
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
