"""src/asr/preflight.py: the one line scripts/serve.sh prints before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from src.asr.preflight import problem
from src.config import Settings
from tests.support.processes import ROOT
from tests.support.tiny_models import ModelDirs


def test_models_on_disk_mean_no_problem(settings: Settings, model_dirs: ModelDirs):
    local = settings.model_copy(
        update={
            "asr_model": str(model_dirs.asr),
            "asr_vad_model": str(model_dirs.vad),
            "asr_punc_model": str(model_dirs.punc),
        }
    )
    assert problem(local) is None


def test_another_engine_is_not_checked(settings: Settings, tmp_path: Path):
    other = settings.model_copy(
        update={"worker_engine": "tests.support.loudness_engine:load", "asr_model_path": tmp_path}
    )
    assert problem(other) is None


def test_a_first_run_gets_one_line_naming_the_models_and_the_download(tmp_path: Path):
    """Run as serve.sh runs it, in a fresh interpreter that must not import torch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env["ASR_MODEL_PATH"] = str(tmp_path / "hub")
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('src.asr.preflight', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "heavy = {'torch', 'funasr'} & set(sys.modules)\n"
        "sys.stderr.write(f'imported {heavy}' if heavy else '')\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # no .env there: the environment alone configures it
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and done.stderr == ""
    assert lines[0].startswith("ASR_MODEL iic/speech_seaco_paraformer")
    assert f"not found in {tmp_path / 'hub'}: run `uv run --extra engine python " in lines[0]
