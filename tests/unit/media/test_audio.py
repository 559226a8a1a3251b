"""src.media.audio: every upload format decodes to the fixture's waveform; bad ones fail typed.

All samples are made from the committed WAV with PyAV's encoders (tests/support/audio_samples.py);
no ffmpeg binary is involved.
"""

from __future__ import annotations

import io
import pickle
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from src.media import audio
from src.media.audio import SAMPLE_RATE, SUPPORTED_FORMATS, AudioError, AudioInfo
from tests.support.audio_samples import (
    BAD_INPUTS,
    GOOD_FORMATS,
    SPEECH_OGG,
    SPEECH_WAV,
    USABLE_TRUNCATED,
    encode_audio,
    make_bad_input,
    make_format,
    make_long,
    make_mp3_without_xing,
    make_silence,
    read_wav,
    speech_spans,
    wav_with_gbk_title,
)

DURATION_TOLERANCE_S = 0.020
# Raw ADTS carries no encoder-delay/padding info (MP4 has an edit list, Ogg a pre-skip), so
# the AAC priming (1024 samples) and the last frame's padding stay in: ~70 ms here.
ADTS_DURATION_TOLERANCE_S = 0.100
MIN_CORRELATION = 0.95
MAX_LAG = SAMPLE_RATE // 10  # codec delay up to 100 ms


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio_samples")


@pytest.fixture(scope="module")
def good_files(samples_dir: Path) -> dict[str, Path]:
    files = {fmt: make_format(fmt, SPEECH_WAV, samples_dir) for fmt in GOOD_FORMATS}
    files["ogg_opus_committed"] = SPEECH_OGG
    return files


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return audio.decode(SPEECH_WAV)


def aligned_correlation(ref: np.ndarray, other: np.ndarray) -> tuple[float, int]:
    """Best normalised correlation of `other` against `ref` over lags within +-MAX_LAG."""
    n = len(ref) + len(other)
    size = 1 << (n - 1).bit_length()
    xcorr = np.fft.irfft(np.fft.rfft(other, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.arange(-MAX_LAG, MAX_LAG + 1)
    best = int(lags[np.argmax(xcorr[lags])])  # other[i + lag] ~ ref[i]
    a = ref[max(0, -best) :]
    b = other[max(0, best) :]
    m = min(len(a), len(b))
    a, b = a[:m].astype(np.float64), b[:m].astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), best


def assert_pcm(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    assert x.ndim == 1
    assert np.isfinite(x).all()
    assert float(np.abs(x).max()) <= 1.0


# --- the fixture itself ----------------------------------------------------------------------


def test_fixture_is_16k_mono_speech_pause_speech(reference: np.ndarray) -> None:
    info = audio.probe(SPEECH_WAV)
    spans = speech_spans()
    assert (info.sample_rate, info.channels, info.codec) == (16000, 1, "pcm_s16le")
    assert len(reference) == round(spans["duration_ms"] * SAMPLE_RATE / 1000)
    (_, end1), (start2, _) = spans["speech_ms"]
    assert 1500 <= start2 - end1 <= 2500  # the pause the VAD must split on
    pause = reference[end1 * 16 + 1600 : start2 * 16 - 1600]
    assert float(np.abs(pause).max()) < 1e-3
    assert SPEECH_WAV.stat().st_size < 400_000


# --- every format ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [*GOOD_FORMATS, "ogg_opus_committed"])
def test_format_decodes_to_the_wav(
    fmt: str,
    good_files: dict[str, Path],
    reference: np.ndarray,
    record_property: Callable[[str, object], None],
) -> None:
    x = audio.decode(good_files[fmt])
    assert_pcm(x)
    tolerance = ADTS_DURATION_TOLERANCE_S if fmt == "aac" else DURATION_TOLERANCE_S
    error_s = (len(x) - len(reference)) / SAMPLE_RATE
    assert abs(error_s) <= tolerance, f"{fmt}: {error_s * 1000:+.1f} ms"
    corr, lag = aligned_correlation(reference, x)
    record_property("duration_error_ms", round(error_s * 1000, 1))  # in --junitxml
    record_property("correlation", round(corr, 4))
    record_property("lag_samples", lag)
    assert corr >= MIN_CORRELATION, f"{fmt}: correlation {corr:.4f} (lag {lag})"


@pytest.mark.parametrize("fmt", [*GOOD_FORMATS, "ogg_opus_committed"])
def test_path_bytes_and_file_object_agree(fmt: str, good_files: dict[str, Path]) -> None:
    path = good_files[fmt]
    from_path, info = audio.load_audio(path)
    from_str = audio.decode(str(path))
    from_bytes = audio.decode(path.read_bytes())
    from_buffer = audio.decode(io.BytesIO(path.read_bytes()))
    with path.open("rb") as f:
        from_file = audio.decode(f)
    for other in (from_str, from_bytes, from_buffer, from_file):
        np.testing.assert_array_equal(other, from_path)
    assert audio.probe(path.read_bytes()) == info


@pytest.mark.parametrize("fmt", list(GOOD_FORMATS))
def test_probe_names_the_extension_from_content(
    fmt: str, good_files: dict[str, Path], tmp_path: Path
) -> None:
    # Uploaded under a misleading name: the content decides.
    misnamed = tmp_path / ("voice.mp3" if fmt != "mp3" else "voice.wav")
    misnamed.write_bytes(good_files[fmt].read_bytes())
    info = audio.probe(misnamed)
    assert info.extension == GOOD_FORMATS[fmt][1]
    assert info.extension in SUPPORTED_FORMATS
    assert info.sample_rate > 0 and info.channels >= 1


def test_probe_reports_the_container(good_files: dict[str, Path]) -> None:
    info = audio.probe(good_files["mp4_video"])
    assert info == AudioInfo(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        codec="aac",
        duration_s=pytest.approx(6.614, abs=0.01),
        sample_rate=44100,
        channels=2,
        extension="mp4",
    )
    assert audio.probe(good_files["ogg_opus"]).codec == "opus"
    assert audio.probe(good_files["mp3"]).codec == "mp3"
    # No declared duration (live WebM) or only a bit-rate guess (ADTS): None, not a guess.
    assert audio.probe(good_files["webm_live"]).duration_s is None
    assert audio.probe(good_files["aac"]).duration_s is None


def test_m4a_has_moov_after_mdat_and_still_decodes_from_bytes(
    good_files: dict[str, Path], reference: np.ndarray
) -> None:
    data = good_files["m4a"].read_bytes()
    assert data.find(b"mdat") < data.find(b"moov")
    x = audio.decode(data)
    assert abs(len(x) - len(reference)) <= DURATION_TOLERANCE_S * SAMPLE_RATE


class _Pipe(io.RawIOBase):
    """Readable, not seekable: what a socket or a pipe looks like."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_unseekable_file_object_with_moov_at_end(good_files: dict[str, Path]) -> None:
    expected = audio.decode(good_files["m4a"])
    np.testing.assert_array_equal(audio.decode(_Pipe(good_files["m4a"].read_bytes())), expected)


def test_probe_then_decode_the_same_file_object(good_files: dict[str, Path]) -> None:
    with good_files["flac"].open("rb") as f:
        f.read(100)  # wherever it stands, the whole file is read
        info = audio.probe(f)
        assert f.tell() == 0
        x = audio.decode(f)
    assert info.extension == "flac"
    assert len(x) == round(6.614 * SAMPLE_RATE)


def test_float_16k_mono_needs_no_conversion(tmp_path: Path, reference: np.ndarray) -> None:
    # The resampler passes such frames through untouched (and flushes with [None]).
    samples, rate = read_wav(SPEECH_WAV)
    path = encode_audio(
        samples, rate, tmp_path / "f32.wav", container="wav", codec="pcm_f32le", out_rate=16000
    )
    np.testing.assert_allclose(audio.decode(path), reference, atol=1e-6)


def test_sample_rate_change_mid_stream(tmp_path: Path, reference: np.ndarray) -> None:
    # Two MP3s joined byte-wise (44.1 kHz stereo, then 16 kHz mono): one resampler cannot
    # take both, so decoding must start a new one at the switch.
    samples, rate = read_wav(SPEECH_WAV)
    first = encode_audio(
        samples,
        rate,
        tmp_path / "a.mp3",
        container="mp3",
        codec="libmp3lame",
        out_rate=44100,
        layout="stereo",
    )
    second = encode_audio(
        samples, rate, tmp_path / "b.mp3", container="mp3", codec="libmp3lame", out_rate=16000
    )
    # The join also leaves one undecodable packet (the second file's ID3 tag), which is skipped.
    x = audio.decode(first.read_bytes() + second.read_bytes())
    assert_pcm(x)
    # The second file's encoder delay and Xing frame are not trimmed: up to ~0.2 s extra.
    assert 0 <= len(x) - 2 * len(reference) < 0.2 * SAMPLE_RATE
    corr, _ = aligned_correlation(reference, x[len(x) - len(reference) :])
    assert corr >= MIN_CORRELATION


def test_non_utf8_tags_do_not_stop_decoding(reference: np.ndarray) -> None:
    data = wav_with_gbk_title(SPEECH_WAV)
    assert audio.probe(data).extension == "wav"
    np.testing.assert_array_equal(audio.decode(data), reference)


def test_all_silence_is_audio_not_an_error(tmp_path: Path) -> None:
    x = audio.decode(make_silence(tmp_path, seconds=3.0))
    assert len(x) == 3 * SAMPLE_RATE
    assert not x.any()


def test_concurrent_decodes_are_independent(good_files: dict[str, Path]) -> None:
    names = ["mp3", "m4a", "ogg_opus", "flac"] * 2
    expected = {n: audio.decode(good_files[n]) for n in set(names)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: audio.decode(good_files[n]), names))
    for name, got in zip(names, results, strict=True):
        np.testing.assert_array_equal(got, expected[name])


# --- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason"), sorted(BAD_INPUTS.items()))
def test_bad_input_raises_audio_error(name: str, reason: str, samples_dir: Path) -> None:
    path = make_bad_input(name, SPEECH_WAV, samples_dir)
    data = path.read_bytes()
    for source in (path, data, io.BytesIO(data)):
        for call in (audio.probe, audio.decode):
            if name in ("truncated_mp3", "mp3_garbage_middle") and call is audio.probe:
                continue  # the damage is past the first frames: only a full decode sees it
            with pytest.raises(AudioError) as caught:
                call(source)
            assert caught.value.reason == reason, (name, str(caught.value))
            assert str(caught.value)  # a human message
            assert isinstance(caught.value, ValueError)


def test_bad_input_messages(samples_dir: Path) -> None:
    def message(name: str) -> str:
        with pytest.raises(AudioError) as caught:
            audio.decode(make_bad_input(name, SPEECH_WAV, samples_dir))
        return str(caught.value)

    assert message("video_only_mp4") == "The file contains no audio stream"
    assert message("empty") == "The file is empty"
    assert "not a supported audio format" in message("png_as_mp3")
    assert "truncated" in message("truncated_mp3")


@pytest.mark.parametrize("name", sorted(USABLE_TRUNCATED))
def test_truncated_without_declared_length_decodes_what_is_there(
    name: str, samples_dir: Path, reference: np.ndarray
) -> None:
    x = audio.decode(make_bad_input(name, SPEECH_WAV, samples_dir))
    assert_pcm(x)
    kept = USABLE_TRUNCATED[name]
    assert 0.5 * kept * len(reference) < len(x) < 1.2 * kept * len(reference)
    corr, _ = aligned_correlation(reference[: len(x)], x)
    assert corr >= MIN_CORRELATION


def test_missing_path_is_the_callers_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        audio.decode(tmp_path / "nope.wav")


def test_audio_error_survives_pickling() -> None:
    # RQ pickles a failed job's exception.
    err = pickle.loads(pickle.dumps(AudioError("too_long", "Audio is 3h05m long")))
    assert (err.reason, str(err)) == ("too_long", "Audio is 3h05m long")


def test_ffmpeg_does_not_write_to_stderr(
    samples_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("mp3_garbage_middle", "text_as_wav", "ogg_header_cut"):
        with pytest.raises(AudioError):
            audio.decode(make_bad_input(name, SPEECH_WAV, samples_dir))
    assert capfd.readouterr().err == ""


# --- duration limit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_flac(samples_dir: Path) -> Path:
    return make_long(SPEECH_WAV, samples_dir, seconds=600, fmt="flac")


def test_probe_rejects_too_long_before_decoding(
    long_flac: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the declared duration was over the limit")

    monkeypatch.setattr(audio, "_decode", no_decoding)
    for call in (audio.probe, audio.load_audio, audio.decode):
        started = time.perf_counter()
        with pytest.raises(AudioError) as caught:
            call(long_flac, max_duration_s=60)
        assert time.perf_counter() - started < 0.5
        assert caught.value.reason == "too_long"
        assert str(caught.value) == "Audio is 10m00s long; the limit is 1m00s"


def test_within_the_limit_passes(long_flac: Path) -> None:
    assert audio.probe(long_flac, max_duration_s=601).duration_s == pytest.approx(600)


def test_the_limit_holds_without_a_declared_duration(samples_dir: Path) -> None:
    live = make_long(SPEECH_WAV, samples_dir, seconds=30, fmt="webm_live")
    assert audio.probe(live).duration_s is None  # nothing declared: measured from the packets
    for call in (audio.probe, audio.decode):
        with pytest.raises(AudioError) as caught:
            call(live, max_duration_s=10)
        assert caught.value.reason == "too_long"
        assert str(caught.value) == "Audio is longer than the limit of 10.0s"
    assert audio.probe(live, max_duration_s=31).extension == "webm"
    assert len(audio.decode(live, max_duration_s=31)) == 30 * SAMPLE_RATE


@pytest.fixture(scope="module")
def mp3_without_xing(samples_dir: Path) -> Path:
    """~200 s of CBR MP3 that declares no length (no Xing/Info header), 800 KB."""
    return make_mp3_without_xing(SPEECH_WAV, samples_dir / "no_xing.mp3", seconds=200)


def test_probe_measures_an_mp3_that_declares_no_length(mp3_without_xing: Path) -> None:
    """The API only probes an upload over 4 MB: a 3 h 10 min MP3 without a Xing header passed
    and failed in the worker. Its packets are now counted (no decoding) against the limit."""
    assert audio.probe(mp3_without_xing).duration_s is None
    with pytest.raises(AudioError) as caught:
        audio.probe(mp3_without_xing, max_duration_s=120)
    assert caught.value.reason == "too_long"
    assert str(caught.value) == "Audio is longer than the limit of 2m00s"
    assert audio.probe(mp3_without_xing, max_duration_s=210).extension == "mp3"
    with mp3_without_xing.open("rb") as f:  # a file object is rewound after the scan
        assert audio.probe(f, max_duration_s=210).codec == "mp3"
        assert f.tell() == 0
    decoded = audio.decode(mp3_without_xing, max_duration_s=210)
    assert 200 < len(decoded) / SAMPLE_RATE < 210
    # load_audio measures, then opens again to decode: bytes and file objects survive that.
    assert np.array_equal(audio.decode(mp3_without_xing.read_bytes(), max_duration_s=210), decoded)
    with mp3_without_xing.open("rb") as f:
        assert np.array_equal(audio.decode(f, max_duration_s=210), decoded)
        assert f.tell() == 0


def test_a_header_that_speaks_for_part_of_the_file_is_not_trusted(
    mp3_without_xing: Path, tmp_path: Path
) -> None:
    """Joined MP3s: FFmpeg sees the first part's Info header does not cover the file and falls
    back to a guess from the first frame's bit rate (128 kbps here, 32 kbps after)."""
    joined = tmp_path / "joined.mp3"
    head = make_format("mp3", SPEECH_WAV, tmp_path).read_bytes()
    joined.write_bytes(head + mp3_without_xing.read_bytes())
    declared = audio.probe(joined).duration_s
    assert declared is not None and declared < 100  # "declared"; it is ~207 s
    for call in (audio.probe, audio.load_audio):
        with pytest.raises(AudioError) as caught:
            call(joined, max_duration_s=120)
        assert caught.value.reason == "too_long"


def test_the_worker_refuses_an_over_long_file_before_holding_samples(
    mp3_without_xing: Path,
) -> None:
    """load_audio (what the worker calls) measures the packets first: an over-long file never
    gets a sample buffer (a 3 h one used to peak at ~1 GB before failing)."""
    tracemalloc.start()
    try:
        for source in (mp3_without_xing, mp3_without_xing.read_bytes()):
            tracemalloc.reset_peak()
            with pytest.raises(AudioError) as caught:
                audio.load_audio(source, max_duration_s=120)
            assert caught.value.reason == "too_long"
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 2 * 1024 * 1024 + (len(source) if isinstance(source, bytes) else 0)
    finally:
        tracemalloc.stop()


def test_the_decoders_own_limit_lets_go_of_the_samples(
    mp3_without_xing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the packets under-declare, decoding still stops at the limit, and the samples
    decoded so far are freed even though the error is kept (RQ and batch results keep it, and
    its traceback keeps `_decode`'s locals alive): a worker kept ~780 MB after a 3 h file."""
    monkeypatch.setattr(audio, "_metered", lambda packets, *_: packets)  # measure nothing
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as caught:
            audio.load_audio(mp3_without_xing, max_duration_s=100)
        kept = caught.value
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept.reason == "too_long"
    assert kept.__traceback__ is not None
    assert current < 1024 * 1024, f"{current / 1e6:.1f} MB still held"
    assert peak < 2 * 101 * SAMPLE_RATE * 4  # never grew past the limit (+1 s), a copy at most


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12.46, "12.5s"), (247, "4m07s"), (3 * 3600, "3h00m"), (3 * 3600 + 5 * 60 + 59, "3h05m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert audio.format_duration(seconds) == text


def _damage(data: bytes, how: str) -> bytes:
    out = bytearray(data)
    mid = len(out) // 2
    if how == "zeros_mid":
        out[mid : mid + 200] = bytes(200)
    elif how == "garbage_mid":
        out[mid : mid + 2000] = np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()
    elif how == "bit_flips":
        for i in range(1000, len(out), 997):
            out[i] ^= 0x55
    elif how == "truncated":
        del out[len(out) // 3 :]
    return bytes(out)


@pytest.mark.parametrize("how", ["intact", "zeros_mid", "garbage_mid", "bit_flips", "truncated"])
def test_ogg_upload_check_reads_pages_and_agrees_with_a_full_decode(tmp_path: Path, how: str):
    """`verify` skips decoding Ogg (page CRCs catch damage); its verdict must be the decoder's."""
    path = tmp_path / f"{how}.ogg"
    path.write_bytes(_damage(SPEECH_OGG.read_bytes(), how))
    try:
        audio.load_audio(path)
        decoded = "ok"
    except AudioError as exc:
        decoded = exc.reason
    try:
        audio.verify(path)
        checked = "ok"
    except AudioError as exc:
        checked = exc.reason
    assert checked == decoded
    assert (how == "bit_flips") == (checked == "corrupt")


def _demuxed_seconds(path: Path) -> float:
    """What PyAV's demuxer hands the decoder: the summed durations of the packets it keeps."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        ticks = sum(p.duration or 0 for p in container.demux(stream) if p.size)
        return float(ticks * stream.time_base)


@pytest.mark.parametrize("how", ["intact", "zeros_mid", "garbage_mid", "bit_flips", "truncated"])
def test_the_ogg_page_walk_finds_the_audio_the_demuxer_keeps(tmp_path: Path, how: str):
    """verify walks the pages itself (one CRC per page, the Opus packet lengths from their
    first bytes) instead of a Python object per packet: it must count what FFmpeg keeps."""
    path = tmp_path / f"{how}.ogg"
    path.write_bytes(_damage(SPEECH_OGG.read_bytes(), how))
    info = AudioInfo(
        format_name="ogg",
        codec="opus",
        duration_s=None,
        sample_rate=48000,
        channels=1,
        extension="ogg",
    )
    pages = audio._ogg_pages(path, info)
    assert pages is not None
    assert pages.audio_s == pytest.approx(_demuxed_seconds(path), abs=0.12)
    assert (pages.damaged == 0) == (how == "intact")
    if how == "intact":
        assert pages.audio_s == pytest.approx(audio.probe(SPEECH_OGG).duration_s, abs=0.03)


def test_the_page_walk_leaves_vorbis_and_other_streams_to_the_demuxer(good_files: dict[str, Path]):
    vorbis = good_files["ogg_vorbis"]
    assert audio._ogg_pages(vorbis, audio.probe(vorbis)) is None
    audio.verify(vorbis)  # and the demuxer's check still passes it
