"""FunASR, imported with its import-time notice sent to the DEBUG log instead of stdout.

`import funasr` runs `funasr.utils.load_utils`, which, when no `ffmpeg` binary is on PATH, prints
"Notice: ffmpeg is not installed. torchaudio is used to load audio" and three more lines. It is
wrong here: the service decodes every upload with PyAV (src/media/audio.py) and hands FunASR
arrays, never a path, so FunASR loads no audio itself. It was the first thing every worker
start printed. The worker supervisor imports this module before it forks (`PRELOAD` in
src/asr/engine.py), and the recognizer takes FunASR from here.
"""

from __future__ import annotations

from src.logs import quiet_import

funasr = quiet_import("funasr")
