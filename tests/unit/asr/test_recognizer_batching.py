"""Cross-job batching in the recognizer: several clips' VAD segments decoded in shared batches.

Real FunASR throughout (tiny random ASR + punc, genuine FSMN-VAD). Random weights make the
decoder sensitive to the smallest numeric difference, so "same transcript as one by one" here is
a strict check of the pooling, the replay into FunASR's own post-processing and the padding fix.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from src.asr.recognizer import BatchRequest, RecognitionError, SpeechRecognizer, Stage, Transcript
from src.media.audio import AudioError, load_audio
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_bad_input
from tests.support.signals import silence


def clips(count: int) -> list[np.ndarray]:
    """Different clips of 5-20 s: the fixture repeated, cut and scaled, so segments differ."""
    base, _ = load_audio(SPEECH_WAV)
    rng = np.random.default_rng(3)
    out = []
    for i in range(count):
        parts = [base * rng.uniform(0.5, 1.0) for _ in range(1 + i % 3)]
        out.append(np.concatenate(parts)[int(rng.integers(0, 16000)) :].astype(np.float32))
    return out


def same(a: Transcript, b: Transcript) -> bool:
    return (
        a.text == b.text and a.speech_segments == b.speech_segments and a.sentences == b.sentences
    )


def test_a_batch_gives_each_clip_its_one_by_one_transcript(recognizer: SpeechRecognizer):
    audio = clips(6)
    solo = [recognizer.recognize(x) for x in audio]
    batch = recognizer.recognize_batch([BatchRequest(audio=x) for x in audio])
    assert all(isinstance(t, Transcript) for t in batch)
    identical = sum(same(a, b) for a, b in zip(solo, batch, strict=True))  # type: ignore[arg-type]
    # Texts must match exactly; one sentence edge may move by a 20 ms frame (CIF timestamps).
    assert [t.text for t in solo] == [t.text for t in batch]  # type: ignore[union-attr]
    assert identical >= 5, identical
    for a, b in zip(solo, batch, strict=True):
        assert b.duration == a.duration
        assert b.processing_time > 0
        for x, y in zip(a.sentences, b.sentences, strict=True):  # type: ignore[union-attr]
            assert abs(x.start - y.start) <= 20 and abs(x.end - y.end) <= 20


def test_padded_batch_decodes_a_segment_as_it_decodes_alone(recognizer: SpeechRecognizer):
    """The predictor must not see the padding of a shorter segment (see _zero_padded_frames)."""
    base, _ = load_audio(SPEECH_WAV)
    short, long = base[:32000], base[:80000]
    auto = recognizer._model
    auto._reset_runtime_configs()
    kwargs = auto.kwargs
    kwargs["batch_size"] = 8
    alone = recognizer._inference([short], model=auto.model, kwargs=kwargs)
    together = recognizer._inference([short, long], model=auto.model, kwargs=kwargs)
    assert alone[0]["text"] == together[0]["text"]
    assert alone[0]["timestamp"] == together[0]["timestamp"]


def test_one_bad_clip_fails_alone(recognizer: SpeechRecognizer, tmp_path: Path):
    bad_clips_fail_alone(recognizer, tmp_path)


def bad_clips_fail_alone(rec: SpeechRecognizer, tmp_path: Path) -> None:
    bad = make_bad_input("truncated_mp3", SPEECH_WAV, tmp_path)
    good = rec.recognize(SPEECH_OGG)
    out = rec.recognize_batch(
        [
            BatchRequest(audio=SPEECH_OGG),
            BatchRequest(audio=bad),
            BatchRequest(audio=tmp_path / "missing.wav"),
            BatchRequest(audio=silence(3.0)),
            BatchRequest(audio=np.zeros(100, dtype=np.float32)),  # under FunASR's minimum
            BatchRequest(audio=np.zeros(0, dtype=np.float32)),
            BatchRequest(audio=SPEECH_OGG),
        ]
    )
    assert isinstance(out[1], AudioError) and out[1].reason == "corrupt"
    assert isinstance(out[2], FileNotFoundError)
    assert isinstance(out[3], Transcript) and out[3].text == "" and out[3].sentences == []
    assert isinstance(out[4], Transcript) and out[4].text == ""
    assert isinstance(out[5], AudioError) and out[5].reason == "empty"
    for t in (out[0], out[6]):
        assert isinstance(t, Transcript) and same(t, good)


def test_clips_with_other_hotwords_are_decoded_in_their_own_batches(
    recognizer: SpeechRecognizer,
):
    audio = clips(4)
    words = [["阿里巴巴"], [], ["阿里巴巴"], ["通义", "千问"]]
    solo = [recognizer.recognize(x, hotwords=w) for x, w in zip(audio, words, strict=True)]
    calls: list[int] = []
    original = recognizer._inference

    def counting(inputs: Any, **kw: Any) -> Any:
        if kw.get("model") is recognizer._model.model:
            calls.append(len(inputs))
        return original(inputs, **kw)

    recognizer._inference = counting  # type: ignore[method-assign]
    try:
        batch = recognizer.recognize_batch(
            [BatchRequest(audio=x, hotwords=w) for x, w in zip(audio, words, strict=True)]
        )
    finally:
        recognizer._inference = original  # type: ignore[method-assign]
    assert len(calls) == 3  # one pooled ASR batch per distinct hotword list
    for a, b, w in zip(solo, batch, words, strict=True):
        assert isinstance(b, Transcript) and b.text == a.text and b.hotwords == w


def test_a_failed_pooled_batch_falls_back_to_one_by_one(recognizer: SpeechRecognizer):
    audio = clips(3)
    solo = [recognizer.recognize(x) for x in audio]
    original = recognizer._inference
    failed: list[int] = []

    def failing(inputs: Any, **kw: Any) -> Any:
        if kw.get("model") is recognizer._model.model and len(inputs) > 1 and not failed:
            failed.append(len(inputs))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(inputs, **kw)

    recognizer._inference = failing  # type: ignore[method-assign]
    try:
        batch = recognizer.recognize_batch([BatchRequest(audio=x) for x in audio])
    finally:
        recognizer._inference = original  # type: ignore[method-assign]
    assert failed, "the pooled batch never ran"
    assert [t.text for t in batch] == [t.text for t in solo]  # type: ignore[union-attr]


def test_an_engine_error_on_one_clip_is_its_own(recognizer: SpeechRecognizer):
    audio = clips(3)
    original_generate = recognizer._model.generate
    seen: list[int] = []

    def generate(input: Any, **kw: Any) -> Any:
        seen.append(len(input))
        if len(input) == len(audio[1]):
            raise RuntimeError("boom")
        return original_generate(input=input, **kw)

    recognizer._model.generate = generate  # type: ignore[method-assign]
    try:
        out = recognizer.recognize_batch([BatchRequest(audio=x) for x in audio])
    finally:
        recognizer._model.generate = original_generate  # type: ignore[method-assign]
    assert isinstance(out[1], RecognitionError) and "boom" in str(out[1])
    assert isinstance(out[0], Transcript) and isinstance(out[2], Transcript)


def test_each_clip_reports_its_own_progress(recognizer: SpeechRecognizer):
    each_clip_reports_its_own_progress(recognizer)


def each_clip_reports_its_own_progress(rec: SpeechRecognizer) -> None:
    audio = clips(3)
    events: list[list[tuple[str, float]]] = [[] for _ in audio]

    def reporter(i: int) -> Any:
        return lambda stage, fraction: events[i].append((stage.value, fraction))

    rec.recognize_batch([BatchRequest(audio=x, progress=reporter(i)) for i, x in enumerate(audio)])
    for seen in events:
        stages = [s for s, _ in seen]
        assert stages[0] == Stage.DECODE.value and stages[-1] == Stage.DONE.value
        assert {Stage.VAD.value, Stage.RECOGNITION.value, Stage.PUNCTUATION.value} <= set(stages)
        fractions = [f for _, f in seen]
        assert fractions == sorted(fractions)


# The pipeline: prep processes decode and cut the clips while the ASR model runs waves.


@pytest.fixture(scope="module")
def pipelined(recognizer: SpeechRecognizer) -> Iterator[SpeechRecognizer]:
    """The shared recognizer with one spawned prep process and ASR waves of two clips."""
    recognizer.start_prep(processes=1, wave_jobs=2)
    yield recognizer
    recognizer.stop_prep()


def model_calls(rec: SpeechRecognizer) -> tuple[list[int], list[int], Any]:
    """Count this process's ASR batches (segments each) and VAD calls while installed."""
    asr: list[int] = []
    vad: list[int] = []
    original = rec._inference

    def counting(inputs: Any, **kw: Any) -> Any:
        if kw.get("model") is rec._model.model:
            asr.append(len(inputs))
        if kw.get("model") is rec._model.vad_model:
            vad.append(1)
        return original(inputs, **kw)

    rec._inference = counting  # type: ignore[method-assign]
    return asr, vad, original


def test_a_pipelined_pass_gives_each_clip_its_one_by_one_transcript(
    pipelined: SpeechRecognizer,
):
    audio = clips(6)
    solo = [pipelined.recognize(x) for x in audio]
    asr, vad, original = model_calls(pipelined)
    try:
        batch = pipelined.recognize_batch([BatchRequest(audio=x) for x in audio])
    finally:
        pipelined._inference = original  # type: ignore[method-assign]
    assert [t.text for t in solo] == [t.text for t in batch]  # type: ignore[union-attr]
    assert sum(same(a, b) for a, b in zip(solo, batch, strict=True)) >= 5  # type: ignore[arg-type]
    assert vad == []  # every clip was decoded and cut in the prep process
    assert len(asr) >= 3  # three waves of two clips, not one pooled pass
    for a, b in zip(solo, batch, strict=True):
        assert isinstance(b, Transcript) and b.duration == a.duration and b.processing_time > 0


def test_a_bad_clip_fails_alone_in_the_prep_process(pipelined: SpeechRecognizer, tmp_path: Path):
    bad_clips_fail_alone(pipelined, tmp_path)


def test_a_killed_prep_process_costs_no_clip(pipelined: SpeechRecognizer):
    """SIGKILL the prep process as the first clip comes back: the rest are prepared in the
    worker, every clip gets its transcript, and the next pass starts a fresh pool."""
    audio = clips(5)
    solo = [pipelined.recognize(x) for x in audio]
    killed: list[int] = []

    def kill_pool(stage: Stage, fraction: float) -> None:
        if stage == Stage.VAD and not killed:
            for child in multiprocessing.active_children():
                os.kill(child.pid or 0, signal.SIGKILL)
                killed.append(child.pid or 0)

    requests = [BatchRequest(audio=x, progress=kill_pool) for x in audio]
    first = pipelined.recognize_batch(requests)
    assert killed
    assert [t.text for t in first] == [t.text for t in solo]  # type: ignore[union-attr]
    _, vad, original = model_calls(pipelined)
    try:
        again = pipelined.recognize_batch([BatchRequest(audio=x) for x in audio])
    finally:
        pipelined._inference = original  # type: ignore[method-assign]
    assert [t.text for t in again] == [t.text for t in solo]  # type: ignore[union-attr]
    assert vad == []  # the fresh pool prepared them all
    alive = [c.pid for c in multiprocessing.active_children()]
    assert alive and not set(alive) & set(killed)


def test_each_clip_reports_its_own_progress_through_the_pipeline(pipelined: SpeechRecognizer):
    each_clip_reports_its_own_progress(pipelined)
