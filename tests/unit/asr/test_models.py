"""src/asr/models.py: where a model name resolves to on disk, and what a missing one says."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.asr.models import ModelNotFoundError, resolve_model_dir
from tests.support.tiny_models import ModelDirs


def test_missing_model_names_the_download_script(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match=r"scripts/download_models\.py"):
        resolve_model_dir("iic/not-downloaded", tmp_path, role="ASR")


def test_models_resolve_from_a_modelscope_cache_layout(model_dirs: ModelDirs, tmp_path: Path):
    cache = tmp_path / "hub"
    target = cache / "models" / "iic" / "tiny-seaco"
    target.parent.mkdir(parents=True)
    target.symlink_to(model_dirs.asr)
    assert resolve_model_dir("iic/tiny-seaco", cache) == target
