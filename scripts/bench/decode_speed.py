"""Decode time per audio-minute, per upload format, with src.media.audio (PyAV, in-process).

Builds a 60 s clip per format by looping the committed speech fixture (PyAV encoders, no ffmpeg
binary), then times `load_audio` on it. Run from the repository root:

    .venv/bin/python scripts/bench/decode_speed.py [--seconds 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from src.media import audio  # noqa: E402
from tests.support.audio_samples import GOOD_FORMATS, SPEECH_WAV, make_long  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed decodes per format (best is kept)"
    )
    args = parser.parse_args()

    import av

    print(f"PyAV {av.__version__}, libavcodec {av.library_versions['libavcodec']}")
    print(f"{args.seconds:.0f} s clip per format, best of {args.repeat} decodes\n")
    header = ("format", "codec", "size KB", "decode ms", "ms/audio-min", "x realtime")
    print("{:<12} {:<10} {:>8} {:>10} {:>13} {:>11}".format(*header))
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in GOOD_FORMATS:
            path = make_long(SPEECH_WAV, Path(tmp), seconds=args.seconds, fmt=fmt)
            samples, info = audio.load_audio(path)  # warm-up
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                samples, info = audio.load_audio(path)
                times.append(time.perf_counter() - started)
            seconds = min(times)  # best of N: the machine may be busy
            minutes = len(samples) / audio.SAMPLE_RATE / 60
            print(
                f"{fmt:<12} {info.codec:<10} {path.stat().st_size / 1024:>8.0f} "
                f"{seconds * 1000:>10.1f} {seconds * 1000 / minutes:>13.1f} "
                f"{minutes * 60 / seconds:>11.0f}"
            )


if __name__ == "__main__":
    main()
