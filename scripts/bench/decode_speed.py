"""Decode time per audio-minute, per upload format, with src.media.audio (PyAV, in-process).

Loops the committed speech fixture into a clip per format (PyAV encoders, no ffmpeg binary) and
times `load_audio` on it, best of --repeat (the machine may be busy). From the repository root:

    .venv/bin/python scripts/bench/decode_speed.py [--seconds 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import av

from src.media import audio
from tests.support.audio_samples import GOOD_FORMATS, SPEECH_WAV, make_long


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length")
    parser.add_argument("--repeat", type=int, default=5, help="timed decodes per format")
    args = parser.parse_args()
    print(f"PyAV {av.__version__}, libavcodec {av.library_versions['libavcodec']}")
    print(f"{args.seconds:.0f} s clip per format, best of {args.repeat} decodes\n")
    head = ("format", "codec", "size KB", "decode ms", "ms/audio-min", "x realtime")
    print("{:<12} {:<10} {:>8} {:>10} {:>13} {:>11}".format(*head))
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in GOOD_FORMATS:
            path = make_long(SPEECH_WAV, Path(tmp), seconds=args.seconds, fmt=fmt)
            samples, info = audio.load_audio(path)  # warm-up
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                audio.load_audio(path)
                times.append(time.perf_counter() - started)
            best = min(times)
            minutes = len(samples) / audio.SAMPLE_RATE / 60
            size_kb, ms = path.stat().st_size / 1024, best * 1000
            speed = f"{ms:>10.1f} {ms / minutes:>13.1f} {minutes * 60 / best:>11.0f}"
            print(f"{fmt:<12} {info.codec:<10} {size_kb:>8.0f} {speed}")


if __name__ == "__main__":
    main()
