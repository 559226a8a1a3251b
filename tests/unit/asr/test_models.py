"""src/asr/models.py: where a model name resolves to on disk, what a missing one says, and how a
fetched model directory is verified (against the tiny model directories the tests build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from src.asr.models import (
    ModelNotFoundError,
    resolve_model_dir,
    resolve_model_dirs,
    verify_model_dir,
)
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


def test_one_message_names_every_missing_model_the_cache_and_the_command(
    model_dirs: ModelDirs, tmp_path: Path
):
    """A first run lacks all three: one line says so, with the setting to fix for each."""
    models = {"ASR_MODEL": "iic/a", "ASR_VAD_MODEL": str(model_dirs.vad), "ASR_PUNC_MODEL": "iic/p"}
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model_dirs(models, tmp_path)
    assert str(caught.value) == (
        f"ASR_MODEL iic/a and ASR_PUNC_MODEL iic/p not found in {tmp_path}: run "
        "`uv run --extra engine python scripts/download_models.py` (or set them to local ones)"
    )


def test_a_directory_setting_is_never_looked_up_in_the_cache(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model_dirs({"ASR_MODEL": str(empty), "ASR_VAD_MODEL": "/no/such/dir"}, tmp_path)
    assert str(caught.value) == (
        f"ASR_MODEL {empty} is not a FunASR model directory (no config.yaml and model.pt); "
        "ASR_VAD_MODEL /no/such/dir: no such directory"
    )


def test_every_tiny_model_directory_verifies(model_dirs: ModelDirs):
    for path in (model_dirs.asr, model_dirs.vad, model_dirs.punc):
        check = verify_model_dir(path)
        assert check.ok, check.problems
        assert check.files >= 4 and check.size_bytes > 0


@pytest.fixture
def asr_copy(model_dirs: ModelDirs, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dirs.asr, tmp_path / "asr"))


def test_a_file_the_manifest_names_is_required(asr_copy: Path):
    """tokens.json is named only in configuration.json's file_path_metas, not in MODEL_FILES."""
    (asr_copy / "tokens.json").unlink()
    (asr_copy / "seg_dict").unlink()
    check = verify_model_dir(asr_copy)
    assert not check.ok and check.problems == ["missing seg_dict, tokens.json"]


def test_an_empty_weights_file_fails(asr_copy: Path):
    (asr_copy / "model.pt").write_bytes(b"")
    assert verify_model_dir(asr_copy).problems == ["empty model.pt"]


def test_a_directory_without_its_manifest_fails(asr_copy: Path):
    (asr_copy / "configuration.json").unlink()
    assert verify_model_dir(asr_copy).problems == ["no configuration.json"]
    (asr_copy / "configuration.json").write_text("{not json")
    assert verify_model_dir(asr_copy).problems[0].startswith("unreadable configuration.json")


def test_no_directory_at_all_fails(tmp_path: Path):
    assert not verify_model_dir(tmp_path / "absent").ok
