"""Cross-job pooling: several recordings' VAD segments decoded in shared ASR batches.

One short clip leaves a GPU mostly idle, and FunASR itself decodes a list of inputs one at a
time. Here every clip is decoded and cut by VAD on its own, all their speech segments go through
the ASR model together in length-sorted batches, and then each clip runs FunASR's own
`generate` again with a replay of its VAD output and ASR results, so its merge, punctuation and
sentence split are exactly what a solo transcript gets.

The functions take the `SpeechRecognizer` whose lock the caller holds; they use its loaded
model and its `AutoModel.inference` hook (src/asr/recognizer.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from src.asr.hotwords import clean_hotwords
from src.asr.prep import Prepared
from src.asr.transcript import (
    MIN_SAMPLES,
    ProgressFn,
    RecognitionError,
    Transcript,
    engine_error,
)
from src.media.audio import SAMPLE_RATE, AudioError
from src.vocabulary import Stage

if TYPE_CHECKING:
    from src.asr.recognizer import SpeechRecognizer

log = logging.getLogger(__name__)


@dataclass
class BatchRequest:
    """One recording of a cross-job batch (see `SpeechRecognizer.recognize_batch`)."""

    audio: np.ndarray | str | os.PathLike[str] | bytes
    language: str = "zh"
    batch_size_s: int = 500
    hotwords: Sequence[str] = ()
    progress: ProgressFn | None = None


@dataclass
class Pooled:
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
        return member_cfg(self.request, self.words)

    def sorted_segments(self) -> list[int]:
        """Segment indices in the order FunASR's `inference_with_vad` decodes them."""
        return sorted(
            range(len(self.segments)), key=lambda i: self.segments[i][1] - self.segments[i][0]
        )

    def segment_audio(self, index: int) -> np.ndarray:
        # Same slicing as funasr.utils.vad_utils.slice_padding_audio_samples.
        beg, end = self.segments[index]
        return self.samples[int(beg * 16) : min(int(end * 16), len(self.samples))]


class Replay:
    """Hands FunASR the VAD output and ASR results a pooled pass already computed for one input.

    FunASR's `inference_with_vad` then does its own merging, punctuation and sentence split, so
    a batched transcript goes through exactly the code a solo one does.
    """

    def __init__(self, item: Pooled) -> None:
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


def forward_only(progress: ProgressFn | None) -> ProgressFn | None:
    """Drop reports that would move a clip's progress backwards: the pooled pass reports
    recognition before each clip's replay reports its stages again."""
    if progress is None:
        return None
    reached = -1.0

    def report(stage: Stage, fraction: float) -> None:
        nonlocal reached
        if fraction >= reached:
            reached = fraction
            progress(stage, fraction)

    return report


def recognize_batch(
    rec: SpeechRecognizer, requests: Sequence[BatchRequest]
) -> list[Transcript | Exception]:
    """Each request's Transcript or exception (AudioError, RecognitionError), in order.

    Without prep processes every member is decoded and cut here, then all go through the ASR
    model in one wave. With them (`SpeechRecognizer.start_prep`), members come back from the
    pool as they are ready and go through the ASR model in waves of `rec.wave_jobs`, while the
    pool prepares the next ones: the GPU no longer waits for the CPU's decode and VAD.
    """
    requests = [dataclasses.replace(r, progress=forward_only(r.progress)) for r in requests]
    results: list[Transcript | Exception | None] = [None] * len(requests)
    wave: list[Pooled] = []
    for index, got in prepared_members(rec, requests):
        if not isinstance(got, Pooled):
            results[index] = got
            continue
        wave.append(got)
        if len(wave) == rec.wave_jobs:
            finish_wave(rec, wave, results)
            wave = []
    finish_wave(rec, wave, results)
    return [r if r is not None else RecognitionError("no result") for r in results]


def finish_wave(
    rec: SpeechRecognizer, wave: list[Pooled], results: list[Transcript | Exception | None]
) -> None:
    """The wave's pooled ASR batches, then FunASR's own post-processing per clip (replayed)."""
    rec._progress = None
    decode_pooled(rec, wave)
    for item in wave:
        rec._progress = item.request.progress
        rec._replay = None if item.failed else Replay(item)
        # Charge this clip its own decode/VAD time plus its share of the pooled batches.
        started = time.perf_counter() - item.prep_seconds - item.pooled_seconds
        try:
            out = rec._model.generate(input=item.samples, **item.cfg)
        except Exception as exc:
            results[item.index] = engine_error(exc)
            continue
        finally:
            rec._replay = None
        results[item.index] = rec._transcript(
            out[0] if out else {},
            len(item.samples) / SAMPLE_RATE,
            item.words,
            item.request.language,
            started,
        )
    rec._progress = None


Member = Pooled | Transcript | Exception


def prepared_members(
    rec: SpeechRecognizer, requests: Sequence[BatchRequest]
) -> Iterator[tuple[int, Member]]:
    """(index, member) for every request: in order when prepared here, else as the prep pool
    returns them. A clip's own failure comes back as its exception."""
    pool = rec.prep_pool
    if pool is None:
        for index, request in enumerate(requests):
            yield index, prepare_here(rec, index, request)
        return
    words = [member_words(rec, request) for request in requests]
    futures: dict[Future[Prepared], int] = {}
    for index, request in enumerate(requests):
        rec._progress = request.progress
        rec._report(Stage.DECODE, 0.0)
        futures[pool.submit(request.audio, member_cfg(request, words[index]))] = index
    try:
        for future in as_completed(futures):
            index = futures[future]
            yield index, from_pool(rec, index, requests[index], words[index], future)
    finally:  # a job timeout may stop the pass: the pool need not prepare the rest
        for future in futures:
            future.cancel()


def from_pool(
    rec: SpeechRecognizer,
    index: int,
    request: BatchRequest,
    words: list[str],
    future: Future[Prepared],
) -> Member:
    """The pool's result for one clip as a batch member (or its Transcript or exception)."""
    try:
        prepared = future.result()
    except BrokenProcessPool:  # a prep process died, maybe not of this clip: prepare it here
        log.warning("prep process lost; clip %d of the pass is prepared in the worker", index)
        return prepare_here(rec, index, request)
    except Exception as exc:
        return own_failure(exc)
    rec._progress = request.progress
    if len(prepared.samples) >= MIN_SAMPLES:
        rec._report(Stage.VAD, 0.0)
    started = time.perf_counter() - prepared.seconds
    return member(rec, index, request, words, prepared.samples, prepared.vad, started)


def member_words(rec: SpeechRecognizer, request: BatchRequest) -> list[str]:
    return clean_hotwords([*rec.default_hotwords, *request.hotwords])


def member_cfg(request: BatchRequest, words: list[str]) -> dict[str, Any]:
    """The options FunASR's `generate` gets for this clip (VAD, ASR and the replay)."""
    cfg: dict[str, Any] = {"batch_size_s": request.batch_size_s, "sentence_timestamp": True}
    if words:
        cfg["hotword"] = " ".join(words)
    return cfg


def own_failure(exc: Exception) -> Exception:
    """A clip's own failure as `recognize` raises it: unusable audio (AudioError, OSError) as
    it is, anything else as a RecognitionError."""
    return exc if isinstance(exc, AudioError | OSError) else engine_error(exc)


def prepare_here(rec: SpeechRecognizer, index: int, request: BatchRequest) -> Member:
    """Decode and run VAD on one batch member in this process (as `inference_with_vad` would)."""
    rec._progress = request.progress
    started = time.perf_counter()
    try:
        rec._report(Stage.DECODE, 0.0)
        samples = rec._samples(request.audio)
        words = member_words(rec, request)
        vad: list[dict[str, Any]] = []
        if len(samples) >= MIN_SAMPLES:
            rec._report(Stage.VAD, 0.0)
            auto = rec._model
            auto._reset_runtime_configs()
            cfg = member_cfg(request, words)
            vad = rec._inference(samples, model=auto.vad_model, kwargs=auto.vad_kwargs, **cfg)
    except Exception as exc:
        return own_failure(exc)
    return member(rec, index, request, words, samples, vad, started)


def member(
    rec: SpeechRecognizer,
    index: int,
    request: BatchRequest,
    words: list[str],
    samples: np.ndarray,
    vad: list[dict[str, Any]],
    started: float,
) -> Pooled | Transcript:
    """A prepared clip as a batch member; one too short for FunASR is its (empty) Transcript."""
    rec._segments = []
    if len(samples) < MIN_SAMPLES:
        return rec._transcript({}, len(samples) / SAMPLE_RATE, words, request.language, started)
    segments = [(int(beg), int(end)) for out in vad for beg, end in out.get("value", [])]
    return Pooled(
        index=index,
        request=request,
        samples=samples,
        words=words,
        vad=vad,
        segments=segments,
        prep_seconds=time.perf_counter() - started,
    )


def decode_pooled(rec: SpeechRecognizer, items: list[Pooled]) -> None:
    """Run every member's segments through the ASR model in shared, length-sorted batches.

    Batches follow FunASR's own rule (padded length x count within batch_size_s; segments over
    batch_size_threshold_s alone); members with other hotwords are batched apart, since SeACo
    biases a whole batch with one hotword list.
    """
    groups: dict[tuple[str, ...], list[Pooled]] = {}
    for item in items:
        groups.setdefault(tuple(item.words), []).append(item)
    threshold_ms = int(rec._model.kwargs.get("batch_size_threshold_s", 60)) * 1000
    for members in groups.values():
        limit_ms = min(m.request.batch_size_s for m in members) * 1000
        entries = sorted(
            ((m, seg) for m in members for seg in range(len(m.segments))),
            key=lambda e: e[0].segments[e[1]][1] - e[0].segments[e[1]][0],
        )
        batch: list[tuple[Pooled, int]] = []
        longest = 0
        for entry in entries:
            beg, end = entry[0].segments[entry[1]]
            length = end - beg
            if batch and (
                length >= threshold_ms or max(longest, length) * (len(batch) + 1) > limit_ms
            ):
                run_pooled(rec, batch, members[0].cfg)
                batch, longest = [], 0
            batch.append(entry)
            longest = max(longest, length)
        if batch:
            run_pooled(rec, batch, members[0].cfg)


def run_pooled(rec: SpeechRecognizer, batch: list[tuple[Pooled, int]], cfg: dict[str, Any]) -> None:
    """One shared ASR batch; a failed batch marks its members to be decoded on their own."""
    members = {id(item): item for item, _ in batch}
    if any(item.failed for item in members.values()):
        batch = [(item, seg) for item, seg in batch if not item.failed]
        if not batch:
            return
    auto = rec._model
    started = time.perf_counter()
    try:
        auto._reset_runtime_configs()
        kwargs = auto.kwargs
        auto._merge_runtime_config(kwargs, cfg)
        kwargs["batch_size"] = len(batch)
        audio = [item.segment_audio(seg) for item, seg in batch]
        out = rec._inference(audio, model=auto.model, kwargs=kwargs, **cfg)
    except Exception as exc:
        log.warning(
            "pooled ASR batch of %d segments failed (%s); its clips run alone",
            len(batch),
            engine_error(exc),
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
        rec._progress = item.request.progress
        rec._report(Stage.RECOGNITION, min(1.0, done / speech))
    rec._progress = None
