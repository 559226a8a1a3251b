"""SpeechRecognizer: FunASR's VAD + Paraformer + punctuation pipeline behind one small interface.

Only worker processes import this module: it pulls in torch and FunASR. The model is loaded once
per instance; `recognize` serialises calls because FunASR's `generate` mutates shared state.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.asr.hotwords import clean_hotwords, read_hotwords_file
from src.asr.models import resolve_model_dir
from src.config import Settings
from src.media.audio import SAMPLE_RATE, AudioError, load_audio
from src.vocabulary import Sentence, Stage

log = logging.getLogger(__name__)


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


@dataclass
class BatchRequest:
    """One recording of a cross-job batch (see `SpeechRecognizer.recognize_batch`)."""

    audio: np.ndarray | str | os.PathLike[str] | bytes
    language: str = "zh"
    batch_size_s: int = 500
    hotwords: Sequence[str] = ()
    progress: ProgressFn | None = None


@dataclass
class _Pooled:
    """A batch member between the pooled passes: its audio, VAD output and ASR results."""

    index: int
    request: BatchRequest
    samples: np.ndarray
    words: list[str]
    vad: list[dict[str, Any]] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)
    asr: dict[int, dict[str, Any]] = field(default_factory=dict)
    prep_seconds: float = 0.0
    pooled_seconds: float = 0.0
    failed: bool = False

    @property
    def cfg(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "batch_size_s": self.request.batch_size_s,
            "sentence_timestamp": True,
        }
        if self.words:
            cfg["hotword"] = " ".join(self.words)
        return cfg

    def sorted_segments(self) -> list[int]:
        """Segment indices in the order FunASR's `inference_with_vad` decodes them."""
        order = sorted(
            range(len(self.segments)), key=lambda i: self.segments[i][1] - self.segments[i][0]
        )
        return order

    def segment_audio(self, index: int) -> np.ndarray:
        # Same slicing as funasr.utils.vad_utils.slice_padding_audio_samples.
        beg, end = self.segments[index]
        return self.samples[int(beg * 16) : min(int(end * 16), len(self.samples))]


class _Replay:
    """Hands FunASR the VAD output and ASR results a pooled pass already computed for one input.

    FunASR's `inference_with_vad` then does its own merging, punctuation and sentence split, so
    a batched transcript goes through exactly the code a solo one does.
    """

    def __init__(self, item: _Pooled) -> None:
        self.vad = copy.deepcopy(item.vad)
        order = item.sorted_segments()
        self.pending = [(len(item.segment_audio(i)), item.asr[i]) for i in order]

    def take(self, inputs: list[Any]) -> list[dict[str, Any]] | None:
        """The stored results for these segments, or None if they are not the expected ones."""
        head = self.pending[: len(inputs)]
        if len(head) < len(inputs) or [n for n, _ in head] != [len(x) for x in inputs]:
            return None
        del self.pending[: len(inputs)]
        return [copy.deepcopy(result) for _, result in head]


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


def _zero_padded_frames(model: Any) -> None:
    """Make a batched decode give the same text as a solo one.

    Paraformer's CIF predictor convolves over the encoder output, padding included: in a padded
    batch the last frames of a shorter segment see the padding's (non-zero) encoder states, so
    its last token can differ from decoding it alone (seen with FunASR's own GPU batches too).
    Zeroing the padded frames makes them look like the convolution's own zero padding.
    """
    import torch

    encode = model.encode

    def masked(speech: Any, speech_lengths: Any, *args: Any, **kwargs: Any) -> Any:
        out = encode(speech, speech_lengths, *args, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)):
            return out
        hidden, lengths = out
        if hidden.dim() != 3 or hidden.shape[0] < 2:
            return out
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
        padded = (frames >= lengths.to(hidden.device)[:, None]).unsqueeze(-1)
        return hidden.masked_fill(padded, 0.0), lengths

    model.encode = masked


def _forward_only(progress: ProgressFn | None) -> ProgressFn | None:
    """Drop reports that would move a clip's progress backwards."""
    if progress is None:
        return None
    reached = -1.0

    def report(stage: Stage, fraction: float) -> None:
        nonlocal reached
        if fraction >= reached:
            reached = fraction
            progress(stage, fraction)

    return report


def _engine_error(exc: Exception) -> RecognitionError:
    message = f"{type(exc).__name__}: {str(exc)[:300]}"
    return RecognitionError(message, out_of_memory=is_out_of_memory(exc))


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
        self._replay: _Replay | None = None

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
        if hasattr(self._model.model, "encode"):
            _zero_padded_frames(self._model.model)
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
            cpu_threads=settings.cpu_threads,
        )

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
            raise _engine_error(exc) from exc

        # FunASR drops an input whose text came out empty (all silence): no result at all.
        return self._transcript(results[0] if results else {}, duration, words, language, started)

    def _samples(self, audio: np.ndarray | str | os.PathLike[str] | bytes) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        else:
            samples, _ = load_audio(audio, max_duration_s=self.max_audio_seconds)
        if len(samples) == 0:
            raise AudioError("empty", "The audio contains no samples")
        return samples

    def recognize_batch(self, requests: Sequence[BatchRequest]) -> list[Transcript | Exception]:
        """Transcribe several recordings with their VAD segments pooled into shared ASR batches.

        One short clip leaves a GPU mostly idle; FunASR itself decodes a list of inputs one at a
        time. Here every clip's segments are decoded together, then each clip goes through
        FunASR's own merge/punctuation/sentence code. Each request gets its own Transcript or
        exception (AudioError, RecognitionError): one bad clip never fails the others, and
        members of a pooled ASR batch that failed are decoded again on their own.
        """
        # The pooled pass reports recognition before each clip's replay reports its stages again.
        forward = [dataclasses.replace(r, progress=_forward_only(r.progress)) for r in requests]
        with self._lock:
            try:
                return self._recognize_batch(forward)
            finally:
                self._progress = None
                self._replay = None

    def _recognize_batch(self, requests: Sequence[BatchRequest]) -> list[Transcript | Exception]:
        results: list[Transcript | Exception | None] = [None] * len(requests)
        pooled: list[_Pooled] = []
        for index, request in enumerate(requests):
            self._progress = request.progress
            try:
                prepared = self._prepare(index, request)
            except (AudioError, OSError) as exc:  # the clip's own problem, as `recognize` raises
                results[index] = exc
                continue
            except Exception as exc:
                results[index] = _engine_error(exc)
                continue
            if isinstance(prepared, Transcript):
                results[index] = prepared
            else:
                pooled.append(prepared)
        self._progress = None
        self._decode_pooled(pooled)
        for item in pooled:
            self._progress = item.request.progress
            self._replay = None if item.failed else _Replay(item)
            # Charge this clip its own decode/VAD time plus its share of the pooled batches.
            started = time.perf_counter() - item.prep_seconds - item.pooled_seconds
            try:
                out = self._model.generate(input=item.samples, **item.cfg)
            except Exception as exc:
                results[item.index] = _engine_error(exc)
                continue
            finally:
                self._replay = None
            results[item.index] = self._transcript(
                out[0] if out else {},
                len(item.samples) / SAMPLE_RATE,
                item.words,
                item.request.language,
                started,
            )
        return [r if r is not None else RecognitionError("no result") for r in results]

    def _prepare(self, index: int, request: BatchRequest) -> _Pooled | Transcript:
        """Decode and run VAD on one batch member (as `inference_with_vad` would)."""
        started = time.perf_counter()
        self._report(Stage.DECODE, 0.0)
        samples = self._samples(request.audio)
        words = clean_hotwords([*self.default_hotwords, *request.hotwords])
        self._segments = []
        if len(samples) < MIN_SAMPLES:
            return self._transcript(
                {}, len(samples) / SAMPLE_RATE, words, request.language, started
            )
        item = _Pooled(index=index, request=request, samples=samples, words=words)
        self._report(Stage.VAD, 0.0)
        auto = self._model
        auto._reset_runtime_configs()
        item.vad = self._inference(
            samples, model=auto.vad_model, kwargs=auto.vad_kwargs, **item.cfg
        )
        item.segments = [
            (int(beg), int(end)) for out in item.vad for beg, end in out.get("value", [])
        ]
        item.prep_seconds = time.perf_counter() - started
        return item

    def _decode_pooled(self, items: list[_Pooled]) -> None:
        """Run every member's segments through the ASR model in shared, length-sorted batches.

        Batches follow FunASR's own rule (padded length x count within batch_size_s; segments
        over batch_size_threshold_s alone); members with other hotwords are batched apart,
        since SeACo biases a whole batch with one hotword list.
        """
        groups: dict[tuple[str, ...], list[_Pooled]] = {}
        for item in items:
            groups.setdefault(tuple(item.words), []).append(item)
        threshold_ms = int(self._model.kwargs.get("batch_size_threshold_s", 60)) * 1000
        for members in groups.values():
            limit_ms = min(m.request.batch_size_s for m in members) * 1000
            entries = sorted(
                ((m, seg) for m in members for seg in range(len(m.segments))),
                key=lambda e: e[0].segments[e[1]][1] - e[0].segments[e[1]][0],
            )
            batch: list[tuple[_Pooled, int]] = []
            longest = 0
            for entry in entries:
                beg, end = entry[0].segments[entry[1]]
                length = end - beg
                if batch and (
                    length >= threshold_ms or max(longest, length) * (len(batch) + 1) > limit_ms
                ):
                    self._run_pooled(batch, members[0].cfg)
                    batch, longest = [], 0
                batch.append(entry)
                longest = max(longest, length)
            if batch:
                self._run_pooled(batch, members[0].cfg)

    def _run_pooled(self, batch: list[tuple[_Pooled, int]], cfg: dict[str, Any]) -> None:
        members = {id(item): item for item, _ in batch}
        if any(item.failed for item in members.values()):
            batch = [(item, seg) for item, seg in batch if not item.failed]
            if not batch:
                return
        auto = self._model
        started = time.perf_counter()
        try:
            auto._reset_runtime_configs()
            kwargs = auto.kwargs
            auto._merge_runtime_config(kwargs, cfg)
            kwargs["batch_size"] = len(batch)
            audio = [item.segment_audio(seg) for item, seg in batch]
            out = self._inference(audio, model=auto.model, kwargs=kwargs, **cfg)
        except Exception as exc:
            log.warning(
                "pooled ASR batch of %d segments failed (%s); its clips run alone",
                len(batch),
                _engine_error(exc),
            )
            for item, _ in batch:
                item.failed = True
            return
        if not out:  # no token in any segment: Paraformer returns nothing for the batch
            out = [{"key": "empty", "text": "", "timestamp": []} for _ in batch]
        if len(out) != len(batch):
            for item, _ in batch:
                item.failed = True
            return
        elapsed = time.perf_counter() - started
        total = sum(len(a) for a in audio) or 1
        for (item, seg), result, samples in zip(batch, out, audio, strict=True):
            item.asr[seg] = result
            item.pooled_seconds += elapsed * len(samples) / total
        for item in members.values():
            done = sum(e - b for i, (b, e) in enumerate(item.segments) if i in item.asr)
            speech = sum(e - b for b, e in item.segments) or 1
            self._progress = item.request.progress
            self._report(Stage.RECOGNITION, min(1.0, done / speech))
        self._progress = None

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
