"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import ModelDirs, build_model_dirs

MODEL_CACHE = Path(__file__).resolve().parent / ".cache" / "models"


@pytest.fixture(scope="session")
def model_dirs() -> ModelDirs:
    """Tiny SeACo-Paraformer + CT-punc and the genuine FSMN-VAD, built once into tests/.cache."""
    return build_model_dirs(MODEL_CACHE)


# Redis, settings, the ASGI client and the two-worker service: tests/support/fixtures.py.
pytest_plugins = ["tests.support.fixtures"]
