#!/usr/bin/env bash
# Remakes the committed speech fixture in tests/fixtures/:
#   speech_pause_speech.wav   16 kHz mono s16: Mandarin speech, ~2 s of digital silence, English speech
#   speech_pause_speech.ogg   the same as OGG/Opus 24 kb/s (what a Telegram voice note is)
#   speech_pause_speech.json  duration and speech spans in ms, measured from the WAV by energy
# Needs espeak-ng, sox and ffmpeg (Debian packages) and the project venv (for the measurement).
# The service and the tests need none of these binaries: they only read the committed files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/tests/fixtures"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

ZH_TEXT="今天天气很好"
EN_TEXT="Hello, this is a speech test."

# 1. Speak each span (espeak-ng writes 22.05 kHz mono).
espeak-ng -v cmn -s 210 -w "$TMP/zh_raw.wav" "$ZH_TEXT"
espeak-ng -v en-us -s 160 -w "$TMP/en_raw.wav" "$EN_TEXT"

# 2. Trim leading/trailing silence, convert to 16 kHz mono 16-bit, peak-normalise to -3 dBFS.
#    -D: no dither, so the pauses stay digital zero.
for span in zh en; do
  sox -D "$TMP/${span}_raw.wav" -r 16000 -c 1 -b 16 "$TMP/${span}.wav" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
    gain -n -3 rate -v 16000
done

# 3. 0.3 s lead-in + Mandarin + 2.0 s pause + English + 0.3 s tail, all digital silence.
sox -D -n -r 16000 -c 1 -b 16 "$TMP/lead.wav" trim 0 0.3
sox -D -n -r 16000 -c 1 -b 16 "$TMP/pause.wav" trim 0 2.0
sox -D "$TMP/lead.wav" "$TMP/zh.wav" "$TMP/pause.wav" "$TMP/en.wav" "$TMP/lead.wav" \
  -r 16000 -c 1 -b 16 "$OUT/speech_pause_speech.wav"

# 4. OGG/Opus copy, as Telegram sends voice notes (Opus runs at 48 kHz internally).
ffmpeg -hide_banner -loglevel error -y -i "$OUT/speech_pause_speech.wav" \
  -c:a libopus -b:a 24k -map_metadata -1 -fflags +bitexact \
  "$OUT/speech_pause_speech.ogg"

# 5. Measure the speech spans from the WAV itself (20 ms frames, energy threshold).
"$PY" - "$OUT/speech_pause_speech.wav" "$OUT/speech_pause_speech.json" <<'PYEOF'
import json
import sys
import wave

import numpy as np

wav_path, json_path = sys.argv[1], sys.argv[2]
with wave.open(wav_path, "rb") as w:
    rate = w.getframerate()
    x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0

frame = rate // 50  # 20 ms
n = len(x) // frame
rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
active = rms > 10 ** (-45 / 20)  # -45 dBFS
spans: list[list[int]] = []
for i, on in enumerate(active):
    start_ms, end_ms = i * 20, (i + 1) * 20
    if not on:
        continue
    if spans and start_ms - spans[-1][1] <= 300:  # bridge gaps between syllables
        spans[-1][1] = end_ms
    else:
        spans.append([start_ms, end_ms])
info = {
    "duration_ms": round(len(x) * 1000 / rate),
    "sample_rate": rate,
    "speech_ms": spans,
    "text": ["今天天气很好", "Hello, this is a speech test."],
}
with open(json_path, "w", encoding="utf-8") as f:
    json.dump(info, f, ensure_ascii=False, indent=2)
    f.write("\n")
print(json.dumps(info, ensure_ascii=False))
PYEOF
ls -l "$OUT"/speech_pause_speech.*
