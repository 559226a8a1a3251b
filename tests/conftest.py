"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.asr.recognizer import SpeechRecognizer
from tests.support.tiny_models import ModelDirs, build_model_dirs

MODEL_CACHE = Path(__file__).resolve().parent / ".cache" / "models"


@pytest.fixture(scope="session")
def model_dirs() -> ModelDirs:
    """Tiny SeACo-Paraformer + CT-punc and the genuine FSMN-VAD, built once into tests/.cache."""
    return build_model_dirs(MODEL_CACHE)


@pytest.fixture(scope="session")
def recognizer(model_dirs: ModelDirs) -> SpeechRecognizer:
    """One in-process recognizer on the tiny models (CPU, one thread), shared by the tests."""
    return SpeechRecognizer(
        asr_model=str(model_dirs.asr),
        vad_model=str(model_dirs.vad),
        punc_model=str(model_dirs.punc),
        model_root=Path("/nonexistent-cache"),
        device="cpu",
        cpu_threads=1,
        max_audio_seconds=60,
    )


# Redis, settings, the ASGI client and the two-worker service: tests/support/fixtures.py.
pytest_plugins = ["tests.support.fixtures"]
