"""Audio decoding: any upload -> 16 kHz mono float32 samples, with PyAV (libav* in-process).

Why PyAV and not FunASR's own loader: FunASR shells out to an `ffmpeg` binary for paths and,
for raw bytes, silently yields zero samples for an MP4/M4A whose `moov` atom sits at the end.
Decoding here, to the rate the models want, means FunASR gets a ready numpy array and no binary
is needed at all. Every way an upload can be unusable surfaces as one typed `AudioError`.

The functions are plain and stateless (thread-safe); the only global is PyAV's log level.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal, TypedDict

import av
import av.logging
import numpy as np
from av.audio.resampler import AudioResampler
from av.container import InputContainer

# FFmpeg logs to stderr through PyAV's callback unless told not to; errors still raise.
av.logging.set_level(None)

SAMPLE_RATE = 16000
"""What FunASR's Paraformer / FSMN-VAD / CT-punc models expect."""

SUPPORTED_FORMATS: tuple[str, ...] = (
    "wav",
    "mp3",
    "m4a",
    "aac",
    "flac",
    "ogg",
    "opus",
    "webm",
    "mp4",
    "mkv",
)
"""User-facing names of what can be uploaded; every `AudioInfo.extension` is one of them."""

# Demuxers FFmpeg may pick. Anything else (images, text-as-"tty", playlists such as HLS or
# `concat` that would open further files or URLs) fails to open, as `not_audio`.
_DEMUXERS = ("wav", "mp3", "mov", "aac", "flac", "ogg", "matroska")
_OPEN_OPTIONS = {"format_whitelist": ",".join(_DEMUXERS), "protocol_whitelist": "file"}


class _OpenKwargs(TypedDict, total=False):
    metadata_errors: str


# PyAV < 19 decodes tags strictly as UTF-8 at open, so a WAV whose RIFF INFO is in GBK would
# fail to open; 19 dropped the argument (it always uses surrogateescape).
_OPEN_KWARGS: _OpenKwargs = (
    {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
)

# Demuxers whose declared duration is read from the file, not guessed from the bit rate.
# (mp3 counts only with a Xing/Info/VBRI header, checked separately.)
_EXACT_DURATION = frozenset({"wav", "flac", "mov", "matroska", "ogg"})
_HEAD_BYTES = 64 * 1024

# Truncation: the decoded audio is this much shorter than declared -> "corrupt".
_TRUNCATED_FRACTION = 0.5
_TRUNCATED_MIN_MISSING_S = 1.0
# Undecodable packets: a few are skipped (as ffmpeg does), more mean a damaged file.
_MAX_BAD_PACKETS = 3
_MAX_BAD_PACKET_FRACTION = 0.001

# Magic numbers of the formats above: a file that starts like one but does not open is
# damaged ("corrupt"), anything else is not audio at all ("not_audio").
_MAGIC: tuple[tuple[int, bytes], ...] = (
    (0, b"RIFF"),
    (0, b"RF64"),
    (0, b"ID3"),
    (0, b"fLaC"),
    (0, b"OggS"),
    (0, b"\x1a\x45\xdf\xa3"),  # EBML: Matroska / WebM
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
)

Reason = Literal["empty", "not_audio", "no_audio_stream", "corrupt", "too_long"]
Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


class AudioError(ValueError):
    """The one typed error for unusable audio; .reason is a short code, str(e) a human message.

    reason is one of "empty", "not_audio", "no_audio_stream", "corrupt", "too_long", so an API
    can map it to a status code and a client can branch on it without parsing messages.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        # Survive pickling (RQ stores a failed job's exception).
        return (type(self), (self.reason, str(self)))


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about the audio, before (or without) decoding it."""

    format_name: str
    """Container as PyAV names it, e.g. "mov,mp4,m4a,3gp,3g2,mj2"."""
    codec: str
    """Audio codec, e.g. "aac", "opus", "mp3", "pcm_s16le"."""
    duration_s: float | None
    """Duration the container declares exactly; None when absent or only a bit-rate guess."""
    sample_rate: int
    """The source's rate (decoded audio is always SAMPLE_RATE)."""
    channels: int
    """The source's channel count (decoded audio is always mono)."""
    extension: str
    """Canonical extension to store the upload under, decided from content, not its name."""


def probe(source: Source, *, max_duration_s: float | None = None) -> AudioInfo:
    """Open the container and check it is usable audio, decoding only its first frame(s).

    Cheap enough for the API to run on upload: rejects an over-long file ("too_long") from its
    declared duration and, with a limit, from its packets' durations read without decoding (an
    MP3 without a Xing header declares nothing; one that has one may speak for its first part
    only), and garbage that happens to open as some container ("corrupt"/"not_audio") because
    its first packets do not decode. A seekable file object is read from its start and rewound
    afterwards; an unseekable one is read to the end (consumed). Damage further in (a truncated
    tail, garbage mid-file) only a full decode can find.
    """
    with _opened(source) as (container, head):
        stream, info = _inspect(container, head)
        _check_declared_duration(info, max_duration_s)
        if max_duration_s is None:
            _decode(container, stream, info, max_duration_s, first_frame_only=True)
            return info
        packets = _metered(container.demux(stream), stream, max_duration_s)
        _decode(container, stream, info, max_duration_s, first_frame_only=True, demuxed=packets)
        _drain(packets)
        return info


def decode(source: Source, *, max_duration_s: float | None = None) -> np.ndarray:
    """Decode the best audio stream to float32 mono at SAMPLE_RATE, values in [-1, 1].

    The duration limit is checked against the declared duration first and again while decoding
    (stopping as soon as it is passed) for containers that do not declare one. A few
    undecodable packets are skipped as ffmpeg does (joined MP3s have one); more than
    max(3, 0.1%) of them, or a result under half the declared duration, is "corrupt".
    """
    return load_audio(source, max_duration_s=max_duration_s)[0]


def load_audio(
    source: Source, *, max_duration_s: float | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """probe + decode: what the worker calls.

    With a limit, the packets are measured first (a demux pass, 5-10% of a decode) so an
    over-long file is refused before a single sample is kept: decoding it to the limit would
    hold up to ~690 MB of float32 for 3 h, and a kept exception's traceback would hold it on.
    """
    target, head, rewind = _prepare(source)
    try:
        if max_duration_s is not None:
            with _open(target, head) as container:
                stream, info = _inspect(container, head)
                _check_declared_duration(info, max_duration_s)
                _drain(_metered(container.demux(stream), stream, max_duration_s))
            if not isinstance(target, str):
                target.seek(0)
        with _open(target, head) as container:
            stream, info = _inspect(container, head)
            _check_declared_duration(info, max_duration_s)
            samples = _decode(container, stream, info, max_duration_s, first_frame_only=False)
            return samples, info
    finally:
        if rewind is not None:
            rewind.seek(0)


def verify(source: Source, *, max_duration_s: float | None = None) -> AudioInfo:
    """Everything `load_audio` checks, without resampling or keeping the samples (the API's
    upload check: it needs to know the file is sound, not its waveform)."""
    with _opened(source) as (container, head):
        stream, info = _inspect(container, head)
        _check_declared_duration(info, max_duration_s)
        if info.format_name == "ogg":
            pages = _ogg_pages(source, info)
            if pages is None:  # several logical streams, another codec, or a big file
                _demux_checked(container, stream, info, max_duration_s)
            else:
                _pages_checked(container, stream, info, max_duration_s, pages)
        else:
            _decode(container, stream, info, max_duration_s, first_frame_only=False, keep=False)
        return info


def format_duration(seconds: float) -> str:
    """Human duration for messages: 3h05m, 4m07s, 12.5s."""
    if seconds >= 3600:
        minutes = int(seconds // 60)
        return f"{minutes // 60}h{minutes % 60:02d}m"
    if seconds >= 60:
        whole = int(seconds)
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{seconds:.1f}s"


# --- opening -------------------------------------------------------------------------------


@contextmanager
def _opened(source: Source) -> Iterator[tuple[InputContainer, bytes]]:
    """Open `source` with PyAV -> (container, first bytes of the file).

    Maps an open failure to AudioError; closes the container, and rewinds a caller's file
    object, on exit.
    """
    target, head, rewind = _prepare(source)
    try:
        with _open(target, head) as container:
            yield container, head
    finally:
        if rewind is not None:
            rewind.seek(0)


@contextmanager
def _open(target: str | BinaryIO, head: bytes) -> Iterator[InputContainer]:
    """av.open a prepared target, mapping failure to AudioError; closes the container."""
    try:
        container = av.open(target, mode="r", container_options=_OPEN_OPTIONS, **_OPEN_KWARGS)
    except (av.FFmpegError, ValueError) as exc:
        raise _open_error(head) from exc
    with container:
        yield container


def _prepare(source: Source) -> tuple[str | BinaryIO, bytes, BinaryIO | None]:
    """-> (what av.open takes, the first bytes, the caller's file object to rewind after)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise _empty()
        return io.BytesIO(data), data[:_HEAD_BYTES], None
    if isinstance(source, str | os.PathLike):
        path = os.path.abspath(os.fspath(source))
        if os.stat(path).st_size == 0:  # a missing file is the caller's bug: OSError
            raise _empty()
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
        # "file:" so a name with a colon is never taken for a protocol or URL.
        return "file:" + path, head, None
    if not source.seekable():
        # PyAV can read a pipe, but an MP4 with `moov` at the end needs to seek.
        data = source.read()
        if not data:
            raise _empty()
        return io.BytesIO(data), data[:_HEAD_BYTES], None
    source.seek(0)
    head = source.read(_HEAD_BYTES)
    source.seek(0)
    if not head:
        raise _empty()
    return source, head, source


def _empty() -> AudioError:
    return AudioError("empty", "The file is empty")


def _open_error(head: bytes) -> AudioError:
    if any(head[at : at + len(magic)] == magic for at, magic in _MAGIC):
        return AudioError("corrupt", "The audio file is damaged or incomplete and cannot be read")
    return AudioError(
        "not_audio",
        "The file is not a supported audio format (supported: "
        + ", ".join(SUPPORTED_FORMATS)
        + ")",
    )


# --- inspecting ----------------------------------------------------------------------------


def _inspect(container: InputContainer, head: bytes) -> tuple[av.AudioStream, AudioInfo]:
    audio = [s for s in container.streams.audio if s.codec_context is not None]
    if not container.streams.audio:
        raise AudioError("no_audio_stream", "The file contains no audio stream")
    if not audio:
        raise AudioError("not_audio", "The file's audio codec is not supported")
    try:
        best = container.streams.best("audio")  # an AudioStream or None; typed as any Stream
    except (av.FFmpegError, ValueError):
        best = None
    stream = (
        best if isinstance(best, av.AudioStream) and best.codec_context is not None else audio[0]
    )

    ctx = stream.codec_context
    info = AudioInfo(
        format_name=container.format.name,
        codec=_codec_name(stream),
        duration_s=_declared_duration(container, stream, head),
        sample_rate=int(ctx.sample_rate or 0),
        channels=int(ctx.channels or 0),
        extension=_extension(container, stream),
    )
    return stream, info


def _declared_duration(
    container: InputContainer, stream: av.AudioStream, head: bytes
) -> float | None:
    demuxer = container.format.name.split(",")[0]
    exact = demuxer in _EXACT_DURATION or (
        demuxer == "mp3" and any(tag in head for tag in (b"Xing", b"Info", b"VBRI"))
    )
    if not exact:
        return None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _extension(container: InputContainer, stream: av.AudioStream) -> str:
    demuxer = container.format.name.split(",")[0]
    has_video = any(not _is_attached_picture(v) for v in container.streams.video)
    if demuxer == "mov":
        return "mp4" if has_video else "m4a"
    if demuxer == "matroska":
        codecs = {_codec_name(s) for s in container.streams if s.codec_context}
        webm = {"opus", "vorbis", "vp8", "vp9", "av1"}
        return "webm" if codecs <= webm else "mkv"
    return {"wav": "wav", "mp3": "mp3", "aac": "aac", "flac": "flac", "ogg": "ogg"}[demuxer]


def _is_attached_picture(stream: av.stream.Stream) -> bool:
    """Cover art in an M4A/MKA is a one-frame video stream flagged "attached picture"."""
    flags = getattr(stream, "disposition", None)  # PyAV >= 15; a Flag, an IntFlag from 18
    return flags is not None and bool(flags & type(flags).attached_pic)


def _codec_name(stream: av.stream.Stream) -> str:
    """ "mp3", not the decoder's name "mp3float" (Codec.canonical_name is PyAV >= 15)."""
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", codec.name))


# Vorbis needs a few packets before its first samples; Opus gives them at once.
_FIRST_SAMPLES_WITHIN = 8


def _check_declared_duration(info: AudioInfo, max_duration_s: float | None) -> None:
    declared = info.duration_s
    if max_duration_s is not None and declared is not None and declared > max_duration_s:
        raise _too_long(declared, max_duration_s)


def _too_long(duration_s: float | None, max_duration_s: float) -> AudioError:
    limit = format_duration(max_duration_s)
    if duration_s is None:
        return AudioError("too_long", f"Audio is longer than the limit of {limit}")
    return AudioError(
        "too_long", f"Audio is {format_duration(duration_s)} long; the limit is {limit}"
    )


# --- measuring -----------------------------------------------------------------------------


def _metered(
    packets: Iterable[av.Packet[av.AudioStream]], stream: av.AudioStream, max_duration_s: float
) -> Iterator[av.Packet[av.AudioStream]]:
    """Pass packets through, raising "too_long" once their durations add up past the limit.

    Demuxing without decoding costs ~2 us a packet (0.2-0.6 s an hour of audio), so the length
    is known before anything is decoded, whatever the header claims. Durations are summed (in
    the stream's ticks) because each packet decodes to that many samples; a packet without one
    is judged by how far its timestamp lies from the first.
    """
    time_base = stream.time_base
    if time_base is None or time_base <= 0:
        yield from packets
        return
    limit = float(max_duration_s / time_base)  # in ticks: no Fraction arithmetic per packet
    summed = 0
    first_pts: int | None = None
    for packet in packets:
        if first_pts is None:
            first_pts = packet.pts
        duration = packet.duration
        if duration:
            summed += duration
            if summed > limit:
                raise _too_long(None, max_duration_s)
        elif (
            packet.size and packet.pts is not None and first_pts is not None
        ) and packet.pts - first_pts > limit:
            raise _too_long(None, max_duration_s)
        yield packet


def _drain(packets: Iterator[av.Packet[av.AudioStream]]) -> None:
    """Read the rest of the packets (a `_metered` iterator enforces the limit as it goes)."""
    try:
        for _ in packets:
            pass
    except AudioError:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError("corrupt", "The audio is damaged: part of it could not be read") from exc


# --- decoding ------------------------------------------------------------------------------


class _Buffer:
    """Growable float32 buffer: a 3 h file is ~690 MB at 16 kHz, so avoid a list + concatenate
    (twice the peak) and size it from the declared duration when there is one. It never grows
    past the limit (plus a frame), and `release` lets go of it before a "too_long" is raised,
    since the error's traceback keeps this frame's locals alive as long as someone keeps it."""

    def __init__(self, expected_s: float | None, max_duration_s: float | None = None) -> None:
        self.cap = None if max_duration_s is None else int((max_duration_s + 1.0) * SAMPLE_RATE)
        capacity = int(((expected_s or 60.0) + 1.0) * SAMPLE_RATE)
        self.data = np.empty(min(capacity, self.cap or capacity), dtype=np.float32)
        self.size = 0

    def append(self, chunk: np.ndarray) -> None:
        end = self.size + len(chunk)
        if end > len(self.data):
            wanted = len(self.data) * 3 // 2
            grown = np.empty(max(end, min(wanted, self.cap or wanted)), dtype=np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = chunk
        self.size = end

    def release(self) -> None:
        self.data = np.empty(0, dtype=np.float32)
        self.size = 0

    def result(self) -> np.ndarray:
        self.data.resize(self.size, refcheck=False)  # shrinks in place, no copy
        np.clip(self.data, -1.0, 1.0, out=self.data)  # float codecs overshoot a little
        return self.data


def _decode(
    container: InputContainer,
    stream: av.AudioStream,
    info: AudioInfo,
    max_duration_s: float | None,
    *,
    first_frame_only: bool,
    keep: bool = True,
    demuxed: Iterable[av.Packet[av.AudioStream]] | None = None,
) -> np.ndarray:
    """Demux + decode + resample to 16 kHz mono float32, enforcing limits and integrity.

    With keep=False the frames are decoded and counted but neither resampled nor kept: the same
    checks at a third of the cost, for validating an upload whose samples the API never needs.
    `demuxed` replaces demuxing the stream here (`probe` passes a metered iterator).
    """
    out = _Buffer(
        1.0 if first_frame_only else (info.duration_s if keep else 0.0),
        None if first_frame_only else max_duration_s,
    )
    counted_s = 0.0
    resampler: AudioResampler | None = None
    layout_key: tuple[str, str, int] | None = None
    packets = bad_packets = 0

    def take(frames: Iterable[av.AudioFrame | None]) -> None:
        for frame in frames:
            if frame is None or frame.samples == 0:  # passthrough flush yields [None]
                continue
            # One packed float plane; cheaper than to_ndarray (which vstacks planes).
            # memoryview: numpy's types for Python 3.11 do not know PyAV's buffer protocol.
            plane = memoryview(frame.planes[0])
            out.append(np.frombuffer(plane, dtype=np.float32, count=frame.samples))
            if max_duration_s is not None and out.size > max_duration_s * SAMPLE_RATE:
                out.release()
                raise _too_long(None, max_duration_s)

    try:
        for packet in container.demux(stream) if demuxed is None else demuxed:
            packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError:
                # Skip it, as ffmpeg does: joined MP3s or a cut last packet give one or two.
                bad_packets += 1
                frames = []
            for frame in frames:
                if frame.samples == 0:
                    continue
                if not keep:
                    counted_s += frame.samples / frame.sample_rate
                    if max_duration_s is not None and counted_s > max_duration_s:
                        raise _too_long(None, max_duration_s)
                    continue
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if resampler is None or key != layout_key:
                    # Rate or channels changed mid-stream (HE-AAC, joined MP3s): the resampler
                    # only accepts its first frame's layout, so drain it and start a new one.
                    if resampler is not None:
                        take(resampler.resample(None))
                    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                    layout_key = key
                take(resampler.resample(frame))
                if first_frame_only:
                    _check_bad_packets(bad_packets, packets)
                    return out.result()
        if resampler is not None:
            take(resampler.resample(None))
    except AudioError:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError(
            "corrupt", "The audio is damaged: part of it could not be decoded"
        ) from exc

    if (out.size if keep else counted_s) == 0:
        if bad_packets:
            raise AudioError("corrupt", "The audio is damaged and none of it could be decoded")
        raise AudioError("empty", "The file contains no audio samples")
    _check_bad_packets(bad_packets, packets)
    samples = out.result()
    _check_truncated(info, len(samples) / SAMPLE_RATE if keep else counted_s, "decoded")
    return samples


def _demux_checked(
    container: InputContainer,
    stream: av.AudioStream,
    info: AudioInfo,
    max_duration_s: float | None,
) -> None:
    """`verify` for Ogg: every page carries a CRC that the demuxer checks (a damaged page is
    dropped, as the decoder would see it), so reading the packets, decoding only until the first
    samples, finds what a full decode finds at a sixth of the cost (the Telegram voice note)."""
    packets = 0
    decoded = False
    read_ticks = 0  # in the stream's time base: a Fraction per packet costs more than the demux
    time_base = stream.time_base
    cap_s = math.inf if max_duration_s is None else max_duration_s
    limit = cap_s / float(time_base) if time_base is not None else math.inf
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            packets += 1
            if not decoded and packets <= _FIRST_SAMPLES_WITHIN:
                try:
                    decoded = any(frame.samples for frame in packet.decode())
                except av.FFmpegError:
                    continue
            # Summed, not the last timestamp: pages the CRC check dropped are audio missing.
            if packet.duration:
                read_ticks += packet.duration
                if read_ticks > limit:
                    raise _too_long(None, cap_s)
    except AudioError:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError("corrupt", "The audio is damaged: part of it could not be read") from exc
    read_s = float(read_ticks * time_base) if time_base is not None else 0.0
    _check_decodable(packets, decoded)
    _check_truncated(info, read_s, "read")


def _check_decodable(packets: int, decoded: bool) -> None:
    """The Ogg checks' verdict on the packets read: none at all, or none the codec could decode."""
    if packets == 0:
        raise AudioError("empty", "The file contains no audio samples")
    if not decoded:
        raise AudioError("corrupt", "The audio is damaged and none of it could be decoded")


def _check_truncated(info: AudioInfo, got_s: float, verb: str) -> None:
    declared = info.duration_s
    if declared is None:
        return
    if got_s < declared * _TRUNCATED_FRACTION and declared - got_s > _TRUNCATED_MIN_MISSING_S:
        raise AudioError(
            "corrupt",
            f"The audio file is truncated: it declares {format_duration(declared)} "
            f"but only {format_duration(got_s)} could be {verb}",
        )


# Ogg's page CRC (RFC 3533: polynomial 0x04C11DB7, not reflected, initial value 0, no final
# XOR) is zlib's CRC-32 of the bit-reversed bytes, bit-reversed: one C pass over each page,
# where PyAV's demuxer made a Python packet object for every 20 ms of a voice note.
_BITS_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
_OGG_PAGE_HEAD = 27  # "OggS", version, flags, granule (8), serial (4), sequence (4), CRC (4), n
_OGG_CONTINUED, _OGG_BOS = 0x01, 0x02  # header flags
# Larger uploads are probed, not verified (src/service/submit.py); this bounds the read.
_OGG_WALK_MAX_BYTES = 16 * 1024 * 1024


def _ogg_crc(page: bytes) -> int:
    crc = zlib.crc32(page.translate(_BITS_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{crc:032b}"[::-1], 2)


# Samples at 48 kHz of one Opus frame, by the TOC byte's configuration (RFC 6716, 3.1): SILK
# 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
_OPUS_FRAME = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


def _opus_samples(toc: int, second: int) -> int:
    """A packet's length from its first bytes, as the demuxer reads it."""
    frames = (1, 2, 2, second & 0x3F)[toc & 0x03]
    return _OPUS_FRAME[toc >> 3] * frames


@dataclass(frozen=True)
class _OggPages:
    """What a walk over an Ogg Opus file's pages found: good and damaged pages, and the audio
    of the packets that start on good pages (what the demuxer hands the decoder)."""

    good: int
    damaged: int
    audio_s: float


def _ogg_pages(source: Source, info: AudioInfo) -> _OggPages | None:
    """Walk the pages, checking each CRC as the demuxer does (a damaged page is skipped up to
    the next capture pattern); None where the walk does not apply (Vorbis, whose packet
    lengths need its setup header, several logical streams, a big file)."""
    data = _small_file_bytes(source) if info.codec == "opus" else None
    if data is None:
        return None
    good = damaged = samples = 0
    serial: bytes | None = None
    pos = data.find(b"OggS")
    while pos != -1 and pos + _OGG_PAGE_HEAD <= len(data):
        segments = data[pos + _OGG_PAGE_HEAD : pos + _OGG_PAGE_HEAD + data[pos + 26]]
        end = pos + _OGG_PAGE_HEAD + len(segments) + sum(segments)
        if end > len(data):  # cut short: the rest is missing
            damaged += 1
            break
        page = data[pos:end]
        stored = int.from_bytes(page[22:26], "little")
        if page[4] != 0 or _ogg_crc(page[:22] + bytes(4) + page[26:]) != stored:
            damaged += 1
            pos = data.find(b"OggS", pos + 1)
            continue
        if (page[5] & _OGG_BOS and serial is not None) or page[14:18] != (serial or page[14:18]):
            return None  # a second logical stream (multiplexed or chained): the demuxer's job
        serial, good = page[14:18], good + 1
        if page[6:14] != bytes(8):  # granule 0: the OpusHead and OpusTags pages
            samples += _page_samples(page)
        pos = end
    return _OggPages(good=good, damaged=damaged, audio_s=samples / 48000)


def _page_samples(page: bytes) -> int:
    """Audio of the packets that start on this page (a packet continued from the page before
    was counted there)."""
    count = page[26]
    at, starts, total = _OGG_PAGE_HEAD + count, not page[5] & _OGG_CONTINUED, 0
    for lace in page[_OGG_PAGE_HEAD : _OGG_PAGE_HEAD + count]:
        if starts and lace:
            total += _opus_samples(page[at], page[at + 1] if lace > 1 else 0)
        starts, at = lace < 255, at + lace
    return total


def _small_file_bytes(source: Source) -> bytes | None:
    """The whole upload, when it is small enough to walk in memory (a caller's file object is
    rewound after)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source) if len(source) <= _OGG_WALK_MAX_BYTES else None
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if os.stat(path).st_size > _OGG_WALK_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            return f.read()
    if not source.seekable():
        return None
    source.seek(0)
    data = source.read(_OGG_WALK_MAX_BYTES + 1)
    source.seek(0)
    return data if len(data) <= _OGG_WALK_MAX_BYTES else None


def _pages_checked(
    container: InputContainer,
    stream: av.AudioStream,
    info: AudioInfo,
    max_duration_s: float | None,
    pages: _OggPages,
) -> None:
    """`verify` for an Ogg Opus upload: the page walk finds what the demuxer's CRC check
    finds, and only the first packets are decoded, to know the codec can read them."""
    if not pages.damaged and pages.audio_s == 0:
        raise AudioError("empty", "The file contains no audio samples")
    if pages.damaged and pages.audio_s == 0:
        raise AudioError("corrupt", "The audio is damaged and none of it could be decoded")
    if max_duration_s is not None and pages.audio_s > max_duration_s:
        raise _too_long(None, max_duration_s)
    packets = 0
    decoded = False
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            packets += 1
            with contextlib.suppress(av.FFmpegError):  # the next packets may decode
                decoded = any(frame.samples for frame in packet.decode())
            if decoded or packets >= _FIRST_SAMPLES_WITHIN:
                break
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError("corrupt", "The audio is damaged: part of it could not be read") from exc
    _check_decodable(packets, decoded)
    _check_truncated(info, pages.audio_s, "read")


def _check_bad_packets(bad_packets: int, packets: int) -> None:
    if bad_packets > max(_MAX_BAD_PACKETS, _MAX_BAD_PACKET_FRACTION * packets):
        raise AudioError(
            "corrupt",
            f"The audio is damaged: {bad_packets} of {packets} packets could not be decoded",
        )
