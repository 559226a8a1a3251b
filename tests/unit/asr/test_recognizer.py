"""SpeechRecognizer on the real FunASR pipeline (tiny random ASR + punc, genuine FSMN-VAD).

Random weights give gibberish text, so these tests check behaviour: where speech is found,
silence, hotwords, determinism, errors, progress, and that every format goes through.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from src.asr.recognizer import SpeechRecognizer, Stage, Transcript
from src.media.audio import SAMPLE_RATE, AudioError, decode
from tests.support.audio_samples import (
    BAD_INPUTS,
    SPEECH_OGG,
    SPEECH_WAV,
    make_bad_input,
    make_format,
    make_long,
    speech_spans,
)
from tests.support.signals import silence, voiced
from tests.support.tiny_models import ModelDirs


def test_vad_finds_the_two_spoken_spans(recognizer: SpeechRecognizer):
    result = recognizer.recognize(SPEECH_WAV)
    expected = speech_spans()["speech_ms"]
    assert len(result.speech_segments) == len(expected) == 2
    for (beg, end), (want_beg, want_end) in zip(result.speech_segments, expected, strict=True):
        assert abs(beg - want_beg) <= 400, (beg, want_beg)
        assert abs(end - want_end) <= 400, (end, want_end)
    # Nothing is placed inside the 2 s pause.
    pause = (expected[0][1] + 400, expected[1][0] - 400)
    assert not [s for s in result.speech_segments if s[0] < pause[1] and s[1] > pause[0]]


def test_transcript_fields(recognizer: SpeechRecognizer):
    result = recognizer.recognize(SPEECH_OGG, language="zh")
    assert isinstance(result, Transcript)
    assert result.text and isinstance(result.text, str)
    assert abs(result.duration - speech_spans()["duration_ms"] / 1000) < 0.02
    assert result.sentences, "sentence timestamps are produced"
    for sentence in result.sentences:
        assert 0 <= sentence.start <= sentence.end <= result.duration * 1000 + 50
    assert result.rtf > 0 and result.processing_time > 0
    assert result.models["vad"].endswith("vad-fsmn")
    assert result.language == "zh"


def test_silence_gives_empty_text_and_no_sentences(recognizer: SpeechRecognizer):
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    result = recognizer.recognize(silence)
    assert result.text == ""
    assert result.sentences == []
    assert result.speech_segments == []
    assert result.duration == 3.0


def test_output_is_deterministic(recognizer: SpeechRecognizer):
    first = recognizer.recognize(SPEECH_WAV)
    second = recognizer.recognize(SPEECH_WAV)
    assert first.text == second.text
    assert first.sentences == second.sentences


def test_hotwords_change_the_seaco_output_and_are_echoed(recognizer: SpeechRecognizer):
    plain = recognizer.recognize(SPEECH_WAV)
    biased = recognizer.recognize(SPEECH_WAV, hotwords=["今天", "天气", "速度"])
    assert biased.hotwords == ["今天", "天气", "速度"]
    assert plain.hotwords == []
    assert biased.text != plain.text


def test_unsafe_hotwords_are_dropped(recognizer: SpeechRecognizer):
    result = recognizer.recognize(SPEECH_WAV, hotwords=["http://x", "a b", "list.txt", "好"])
    assert result.hotwords == ["好"]


def test_array_input_matches_file_input(recognizer: SpeechRecognizer):
    from_file = recognizer.recognize(SPEECH_WAV)
    from_array = recognizer.recognize(decode(SPEECH_WAV))
    assert from_file.text == from_array.text


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "flac", "ogg_vorbis", "webm", "mp4_video"])
def test_every_format_goes_through_the_pipeline(
    recognizer: SpeechRecognizer, fmt: str, tmp_path: Path
):
    result = recognizer.recognize(make_format(fmt, SPEECH_WAV, tmp_path))
    assert abs(result.duration - speech_spans()["duration_ms"] / 1000) < 0.1
    assert len(result.speech_segments) == 2


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_input_raises_the_typed_error(recognizer: SpeechRecognizer, bad: str, tmp_path: Path):
    with pytest.raises(AudioError) as err:
        recognizer.recognize(make_bad_input(bad, SPEECH_WAV, tmp_path))
    assert err.value.reason == BAD_INPUTS[bad]


def test_audio_over_the_limit_is_refused(recognizer: SpeechRecognizer, tmp_path: Path):
    with pytest.raises(AudioError) as err:
        recognizer.recognize(make_long(SPEECH_WAV, tmp_path, seconds=70))
    assert err.value.reason == "too_long"


def test_a_few_milliseconds_of_audio_is_empty_not_an_error(recognizer: SpeechRecognizer):
    result = recognizer.recognize(np.full(100, 0.1, dtype=np.float32))
    assert result.text == "" and result.sentences == []


def test_sentence_texts_add_up_to_the_text(recognizer: SpeechRecognizer):
    """Guards the fix for FunASR gluing VAD chunks, which shifted sentence texts at pauses."""
    result = recognizer.recognize(SPEECH_WAV)
    assert len(result.speech_segments) == 2

    def norm(text: str) -> str:  # FunASR capitalises English words in `text` only
        return re.sub(r"\s+", "", text).lower()

    assert norm("".join(s.text for s in result.sentences)) == norm(result.text)


def test_a_tokenless_segment_does_not_blank_the_transcript(model_dirs: ModelDirs):
    """FunASR drops a VAD segment that decodes to no token and then returns empty text for the
    whole input; the recognizer keeps the other segments' text."""
    rec = SpeechRecognizer(
        asr_model=str(model_dirs.asr),
        vad_model=str(model_dirs.vad),
        punc_model=str(model_dirs.punc),
        model_root=Path("/nonexistent-cache"),
        device="cpu",
    )
    # Make the CIF predictor fire rarely: a few tokens in 3 s of voice, none in a short burst.
    rec._model.model.predictor.cif_output.bias.data.fill_(-4.0)
    long = np.concatenate([silence(0.3), voiced(3.0), silence(0.5)])
    alone = rec.recognize(long)
    assert alone.text
    both = rec.recognize(
        np.concatenate([long, silence(2.5), voiced(0.4, f0=200.0, seed=2), silence(0.5)])
    )
    assert len(both.speech_segments) == 2
    assert both.text == alone.text


def test_progress_reports_every_stage_in_order(recognizer: SpeechRecognizer):
    events: list[tuple[Stage, float]] = []
    recognizer.recognize(SPEECH_WAV, progress=lambda stage, frac: events.append((stage, frac)))
    stages = [stage for stage, _ in events]
    assert stages[0] == Stage.DECODE and stages[-1] == Stage.DONE
    order = [Stage.DECODE, Stage.VAD, Stage.RECOGNITION, Stage.PUNCTUATION, Stage.DONE]
    assert [s for s in order if s in stages] == order
    fractions = [frac for _, frac in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_failing_progress_callback_does_not_fail_recognition(recognizer: SpeechRecognizer):
    def broken(stage: Stage, frac: float) -> None:
        raise RuntimeError("reporter down")

    assert recognizer.recognize(SPEECH_WAV, progress=broken).duration > 0


def test_hub_name_loads_offline_from_the_cache(model_dirs: ModelDirs, tmp_path: Path):
    cache = tmp_path / "hub"
    for name, path in {
        "a/asr": model_dirs.asr,
        "a/vad": model_dirs.vad,
        "a/punc": model_dirs.punc,
    }.items():
        (cache / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / "models" / name).symlink_to(path)
    rec = SpeechRecognizer(
        asr_model="a/asr", vad_model="a/vad", punc_model="a/punc", model_root=cache, device="cpu"
    )
    assert rec.model_ids == {"asr": "a/asr", "vad": "a/vad", "punc": "a/punc"}
    assert rec.recognize(SPEECH_WAV).speech_segments
