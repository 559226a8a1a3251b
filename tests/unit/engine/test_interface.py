"""src/engine/interface.py: the worker loads whatever WORKER_ENGINE names, and only an Engine."""

from __future__ import annotations

import pytest

from src.config import Settings, SettingsError, load_settings
from src.engine.interface import Engine, EngineOutput, load_engine, loader_module
from tests.support.loudness_engine import LoudnessEngine


def not_an_engine(settings: Settings) -> object:
    return object()


def test_the_named_loader_is_called_with_the_settings(settings: Settings) -> None:
    chosen = settings.model_copy(
        update={
            "worker_engine": "tests.support.loudness_engine:load",
            "asr_max_audio_seconds": 42.0,
        }
    )
    engine = load_engine(chosen)
    assert isinstance(engine, LoudnessEngine) and isinstance(engine, Engine)
    assert engine.max_audio_seconds == 42.0


def test_a_loader_that_returns_no_engine_is_refused(settings: Settings) -> None:
    wrong = settings.model_copy(update={"worker_engine": f"{__name__}:not_an_engine"})
    with pytest.raises(TypeError, match="not an Engine"):
        load_engine(wrong)


def test_the_default_is_the_asr_engine_and_its_module_is_what_the_supervisor_preloads() -> None:
    assert Settings().worker_engine == "src.asr.engine:load"
    assert loader_module("src.asr.engine:load") == "src.asr.engine"


def test_a_malformed_engine_setting_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_ENGINE", "src.asr.engine")  # no ":function"
    with pytest.raises(SettingsError, match="WORKER_ENGINE"):
        load_settings()


def test_rtf_is_processing_time_per_second_of_input() -> None:
    assert EngineOutput(text="", duration=4.0, processing_time=1.0).rtf == 0.25
    assert EngineOutput(text="", duration=0.0, processing_time=1.0).rtf == 0.0
