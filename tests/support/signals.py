"""Synthetic signals FSMN-VAD treats as speech or as silence (no committed audio needed)."""

from __future__ import annotations

import numpy as np

SR = 16000


def voiced(seconds: float, *, f0: float = 130.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic signal with formants and 4 syllables/s: FSMN-VAD calls it speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))) / SR
    x = np.zeros_like(t)
    for k in range(1, 30):
        amp = 0.02 + sum(
            np.exp(-((((k * f0) - formant) / width) ** 2))
            for formant, width in ((700, 130), (1200, 150), (2600, 250))
        )
        x += amp / np.sqrt(k) * np.sin(k * phase)
    x *= 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    x += 0.002 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)
