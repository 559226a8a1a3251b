"""scripts/download_models.py: per-model progress and verification, with ModelScope's download
replaced by a copy of the tiny model directories (the hub is unreachable from here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.download_models import download
from src.config import Settings
from tests.support.tiny_models import ModelDirs


@pytest.fixture
def hub_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "asr_model_path": tmp_path / "hub",
            "asr_model": "iic/asr",
            "asr_vad_model": "iic/vad",
            "asr_punc_model": "iic/punc",
        }
    )


def hub(model_dirs: ModelDirs) -> dict[str, Path]:
    return {"iic/asr": model_dirs.asr, "iic/vad": model_dirs.vad, "iic/punc": model_dirs.punc}


def test_missing_models_are_fetched_then_verified_one_line_each(
    hub_settings: Settings, model_dirs: ModelDirs, capsys: pytest.CaptureFixture[str]
):
    fetched: list[str] = []

    def fetch(model: str, target: Path) -> Path:
        fetched.append(model)
        return Path(shutil.copytree(hub(model_dirs)[model], target))

    assert download(hub_settings, fetch) == 0
    assert fetched == ["iic/asr", "iic/vad", "iic/punc"]
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == f"[1/3] ASR_MODEL: downloading iic/asr into {hub_settings.asr_model_path}/models/iic/asr"
    )
    verified = out[out.index("verified:") + 1 :]
    assert [line.split(":")[0].strip() for line in verified] == [
        "ASR_MODEL",
        "ASR_VAD_MODEL",
        "ASR_PUNC_MODEL",
    ]
    assert all(": ok: " in line for line in verified)

    # A second run fetches nothing and verifies again.
    assert download(hub_settings, fetch) == 0
    assert len(fetched) == 3
    assert "is already in" in capsys.readouterr().out


def test_an_incomplete_fetch_and_a_failed_one_are_reported_and_fail_the_run(
    hub_settings: Settings, model_dirs: ModelDirs, capsys: pytest.CaptureFixture[str]
):
    def fetch(model: str, target: Path) -> Path:
        if model == "iic/vad":
            raise ConnectionError("modelscope.cn unreachable")
        shutil.copytree(hub(model_dirs)[model], target)
        if model == "iic/punc":
            (target / "tokens.json").unlink()  # cut short
        return target

    assert download(hub_settings, fetch) == 1
    out = capsys.readouterr().out
    assert "ASR_MODEL: ok: " in out
    assert (
        "ASR_VAD_MODEL: FAILED: download failed: ConnectionError: modelscope.cn unreachable" in out
    )
    assert "ASR_PUNC_MODEL: FAILED: missing tokens.json" in out
