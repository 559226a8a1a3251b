"""Audio samples for the tests, made from the committed speech WAV with PyAV's own encoders.

No ffmpeg binary is needed: every format a user may upload (and every way an upload can be
broken) is produced here, in a temporary directory, from `tests/fixtures/speech_pause_speech.wav`.
Only the WAV (and its OGG/Opus copy, the shape of a Telegram voice note) is committed.
"""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPEECH_WAV = FIXTURES / "speech_pause_speech.wav"
SPEECH_OGG = FIXTURES / "speech_pause_speech.ogg"
SPEECH_JSON = FIXTURES / "speech_pause_speech.json"

# name -> (file name suffix, container extension `probe` must report)
GOOD_FORMATS: dict[str, tuple[str, str]] = {
    "wav": (".wav", "wav"),
    "mp3": (".mp3", "mp3"),
    "m4a": (".m4a", "m4a"),  # AAC in MP4, `moov` after `mdat` (not "fast start")
    "aac": (".aac", "aac"),  # raw ADTS AAC
    "flac": (".flac", "flac"),
    "ogg_opus": (".ogg", "ogg"),
    "ogg_vorbis": (".ogg", "ogg"),
    "webm": (".webm", "webm"),
    "webm_live": (".webm", "webm"),  # written unseekably like MediaRecorder: no duration
    "mp4_video": (".mp4", "mp4"),  # H.264 video first, AAC audio second
}

# name -> the AudioError.reason the service must give for it
BAD_INPUTS: dict[str, str] = {
    "empty": "empty",
    "one_byte": "not_audio",
    "text_as_wav": "not_audio",
    "png_as_mp3": "not_audio",
    "wav_header_cut": "corrupt",
    "ogg_header_cut": "corrupt",
    "m4a_header_cut": "corrupt",
    "truncated_mp3": "corrupt",  # its Xing header declares 3x what is left
    "mp3_garbage_middle": "corrupt",
    "video_only_mp4": "no_audio_stream",
    "wav_no_samples": "empty",
}

_BAD_SUFFIX = {
    "empty": ".wav",
    "one_byte": ".mp3",
    "text_as_wav": ".wav",
    "png_as_mp3": ".mp3",
    "wav_header_cut": ".wav",
    "ogg_header_cut": ".ogg",
    "m4a_header_cut": ".m4a",
    "truncated_mp3": ".mp3",
    "truncated_ogg": ".ogg",
    "truncated_wav": ".wav",
    "truncated_mp3_late": ".mp3",
    "mp3_garbage_middle": ".mp3",
    "video_only_mp4": ".mp4",
    "wav_no_samples": ".wav",
}


# Cut mid-stream, but nothing in the file says how long it was meant to be (Ogg's duration is
# read from the last page there is; FFmpeg clamps a WAV's data size to the file): these decode
# to the part that is there. name -> fraction of the bytes kept.
# An MP3 that lost its last fifth is still mostly there, so it decodes too.
USABLE_TRUNCATED: dict[str, float] = {
    "truncated_ogg": 0.3,
    "truncated_wav": 0.3,
    "truncated_mp3_late": 0.8,
}


def speech_spans() -> dict[str, Any]:
    """The fixture's duration and measured speech spans (ms), as the generator script wrote them."""
    return json.loads(SPEECH_JSON.read_text(encoding="utf-8"))


def read_wav(wav: Path) -> tuple[np.ndarray, int]:
    """16-bit mono WAV -> (int16 samples, rate) with the stdlib, independent of PyAV."""
    with wave.open(str(wav), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{wav} is not 16-bit mono")
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
        return samples, w.getframerate()


def write_wav(samples: np.ndarray, rate: int, dest: Path) -> Path:
    """int16 mono samples -> a plain WAV file."""
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return dest


def _audio_frames(samples: np.ndarray, rate: int, chunk: int = 4096) -> list[av.AudioFrame]:
    frames = []
    for start in range(0, len(samples), chunk):
        part = np.ascontiguousarray(samples[start : start + chunk]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(part, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        frames.append(frame)
    return frames


def encode_audio(
    samples: np.ndarray,
    rate: int,
    dest: Path,
    *,
    container: str,
    codec: str,
    out_rate: int,
    layout: str = "mono",
    codec_options: dict[str, str] | None = None,
    video: bool = False,
    audio: bool = True,
    seekable: bool = True,
) -> Path:
    """Encode int16 mono samples with PyAV (its encoder resamples/up-mixes on the way in).

    `video=True` adds a small H.264 stream *before* the audio stream, so a decoder that just
    takes stream 0 would get the wrong one. `seekable=False` writes through a pipe-like object,
    so the muxer cannot go back to fill in the duration (as a browser's MediaRecorder does).
    """
    with dest.open("wb") as raw:
        target: Any = raw if seekable else _Unseekable(raw)
        with av.open(target, "w", format=container) as out:
            vstream = None
            if video:
                vstream = out.add_stream("libx264", rate=10, width=64, height=48)
                vstream.pix_fmt = "yuv420p"
                vstream.codec_context.options = {"preset": "ultrafast"}
            astream = None
            if audio:
                astream = out.add_stream(
                    codec, rate=out_rate, layout=layout, options=codec_options or {}
                )
            if vstream is not None:
                for i in range(max(1, round(len(samples) / rate * 10))):
                    img = np.full((48, 64, 3), (i * 7) % 256, dtype=np.uint8)
                    vframe = av.VideoFrame.from_ndarray(img, format="rgb24")
                    vframe.pts = i
                    vframe.time_base = Fraction(1, 10)
                    for packet in vstream.encode(vframe):
                        out.mux(packet)
                for packet in vstream.encode(None):
                    out.mux(packet)
            if astream is not None:
                for frame in _audio_frames(samples, rate):
                    for packet in astream.encode(frame):
                        out.mux(packet)
                for packet in astream.encode(None):
                    out.mux(packet)
    return dest


class _Unseekable:
    """A write-only file object without seek/tell, like a pipe."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def write(self, data: bytes) -> int:
        return self._raw.write(data)


def _encode_format(fmt: str, samples: np.ndarray, rate: int, dest: Path) -> Path:
    if fmt == "wav":
        return write_wav(samples, rate, dest)
    specs: dict[str, dict[str, Any]] = {
        "mp3": {"container": "mp3", "codec": "libmp3lame", "out_rate": 44100, "layout": "stereo"},
        "m4a": {"container": "ipod", "codec": "aac", "out_rate": 44100},
        "aac": {"container": "adts", "codec": "aac", "out_rate": 22050},
        "flac": {"container": "flac", "codec": "flac", "out_rate": 16000},
        "ogg_opus": {
            "container": "ogg",
            "codec": "libopus",
            "out_rate": 48000,
            "codec_options": {"b": "24000", "application": "audio"},
        },
        # FFmpeg's native Vorbis encoder is "experimental" and stereo-only; the wheel has no
        # libvorbis.
        "ogg_vorbis": {
            "container": "ogg",
            "codec": "vorbis",
            "out_rate": 44100,
            "layout": "stereo",
            "codec_options": {"strict": "experimental"},
        },
        "webm": {"container": "webm", "codec": "libopus", "out_rate": 48000},
        "webm_live": {
            "container": "webm",
            "codec": "libopus",
            "out_rate": 48000,
            "seekable": False,
        },
        "mp4_video": {
            "container": "mp4",
            "codec": "aac",
            "out_rate": 44100,
            "layout": "stereo",
            "video": True,
        },
    }
    if fmt not in specs:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(GOOD_FORMATS)}")
    return encode_audio(samples, rate, dest, **specs[fmt])


def make_format(fmt: str, wav: Path, dest_dir: Path) -> Path:
    """Re-encode the fixture WAV as `fmt` (a key of GOOD_FORMATS) into dest_dir."""
    samples, rate = read_wav(wav)
    suffix, _ = GOOD_FORMATS[fmt]
    return _encode_format(fmt, samples, rate, dest_dir / f"speech_{fmt}{suffix}")


def make_long(wav: Path, dest_dir: Path, *, seconds: float, fmt: str = "flac") -> Path:
    """The fixture looped to `seconds`, for duration limits and the speed benchmark."""
    samples, rate = read_wav(wav)
    reps = int(np.ceil(seconds * rate / len(samples)))
    looped = np.tile(samples, reps)[: round(seconds * rate)]
    suffix, _ = GOOD_FORMATS[fmt]
    return _encode_format(fmt, looped, rate, dest_dir / f"long_{round(seconds)}s_{fmt}{suffix}")


def make_mp3_without_xing(
    wav: Path, dest: Path, *, seconds: float, bit_rate: int = 32000, rate: int = 16000
) -> Path:
    """The fixture as a CBR MP3 with no Xing/Info header and no ID3 tag, repeated to at least
    `seconds`: nothing in it declares its length (FFmpeg can only guess from the bit rate), as
    with a stream recorded from the radio or a muxer that could not seek back.

    One encoding is repeated byte for byte (every copy starts with an empty bit reservoir, so
    it decodes as one stream), so a long file costs writing its bytes, not encoding it.
    """
    samples, in_rate = read_wav(wav)
    one = io.BytesIO()
    with av.open(one, "w", format="mp3", options={"write_xing": "0", "id3v2_version": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        for frame in _audio_frames(samples, in_rate):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = one.getvalue()
    if any(tag in data for tag in (b"Xing", b"Info", b"VBRI", b"ID3")):
        raise AssertionError("the MP3 declares its length after all")
    copies = int(np.ceil(seconds * in_rate / len(samples)))
    with dest.open("wb") as f:
        for _ in range(copies):
            f.write(data)
    return dest


def make_silence(dest_dir: Path, *, seconds: float = 3.0, rate: int = 16000) -> Path:
    """All-digital-silence WAV (no speech for a VAD to find)."""
    return write_wav(
        np.zeros(round(seconds * rate), dtype=np.int16), rate, dest_dir / "silence.wav"
    )


def wav_with_gbk_title(wav: Path) -> bytes:
    """The WAV with a RIFF LIST/INFO title in GBK, as Chinese Windows recorders write it.

    FFmpeg passes such tags through as raw bytes; PyAV < 19 decodes them as strict UTF-8.
    """
    data = wav.read_bytes()
    at = data.find(b"data")
    title = "会议录音 2024".encode("gbk") + b"\x00"
    title += b"\x00" * (len(title) % 2)  # RIFF chunks are word-aligned
    info = b"INFO" + b"INAM" + struct.pack("<I", len(title)) + title
    body = data[12:at] + b"LIST" + struct.pack("<I", len(info)) + info + data[at:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def tiny_png() -> bytes:
    """A valid 1x1 PNG, built by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _bad_bytes(name: str, wav: Path, work: Path) -> bytes:
    if name == "empty":
        return b""
    if name == "one_byte":
        return b"\x00"
    if name == "text_as_wav":
        return ("Meeting notes\n" + "今天的会议记录: nothing to hear here.\n" * 40).encode()
    if name == "png_as_mp3":
        return tiny_png()
    if name == "wav_header_cut":
        return SPEECH_WAV.read_bytes()[:30]
    if name == "ogg_header_cut":
        return make_format("ogg_opus", wav, work).read_bytes()[:40]
    if name == "m4a_header_cut":
        # With `moov` at the end, cutting anywhere before it leaves no index at all.
        data = make_format("m4a", wav, work).read_bytes()
        return data[: data.find(b"moov") - 4]
    if name == "truncated_mp3":
        # The Xing/Info header still declares the full duration.
        data = make_format("mp3", wav, work).read_bytes()
        return data[: len(data) * 3 // 10]
    if name in USABLE_TRUNCATED:
        fmt = {"truncated_ogg": "ogg_opus", "truncated_wav": "wav", "truncated_mp3_late": "mp3"}[
            name
        ]
        data = make_format(fmt, wav, work).read_bytes()
        return data[: round(len(data) * USABLE_TRUNCATED[name])]
    if name == "mp3_garbage_middle":
        data = bytearray(make_format("mp3", wav, work).read_bytes())
        rng = np.random.default_rng(0)
        mid = len(data) // 3
        data[mid : mid + len(data) // 3] = rng.integers(
            0, 256, len(data) // 3, dtype=np.uint8
        ).tobytes()
        return bytes(data)
    if name == "video_only_mp4":
        samples, rate = read_wav(wav)
        path = encode_audio(
            samples,
            rate,
            work / "video_only.mp4",
            container="mp4",
            codec="aac",
            out_rate=44100,
            video=True,
            audio=False,
        )
        return path.read_bytes()
    if name == "wav_no_samples":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
        return buf.getvalue()
    raise ValueError(f"unknown bad input {name!r}; known: {sorted(BAD_INPUTS)}")


def make_bad_input(name: str, wav: Path, dest_dir: Path) -> Path:
    """Write the input `name` (a key of BAD_INPUTS or USABLE_TRUNCATED) under an audio name."""
    work = dest_dir / f"_work_{name}"
    work.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"bad_{name}{_BAD_SUFFIX[name]}"
    dest.write_bytes(_bad_bytes(name, wav, work))
    return dest
