"""`python -m src.asr.preflight`: do the configured models resolve? Checked without torch.

`scripts/serve.sh` runs it before it starts anything, so a first run without models says why in
one line at once (the same reason /health then shows for each worker) instead of leaving it to
the worker logs. Prints nothing and exits 0 when every model resolves or another engine is
configured; prints the reason and exits 1 otherwise. Only pathlib work: no torch, no FunASR.
"""

from __future__ import annotations

import sys

from src.asr.models import ModelNotFoundError, configured_models, resolve_model_dirs
from src.config import Settings, get_settings
from src.engine.interface import loader_module

ASR_ENGINE_MODULE = "src.asr.engine"


def problem(settings: Settings) -> str | None:
    """Why the ASR engine could not load its models from this box, or None."""
    if loader_module(settings.worker_engine) != ASR_ENGINE_MODULE:
        return None  # another engine's models are its own business
    try:
        resolve_model_dirs(configured_models(settings), settings.asr_model_path)
    except ModelNotFoundError as exc:
        return str(exc)
    return None


def main() -> int:
    reason = problem(get_settings())
    if reason is None:
        return 0
    sys.stdout.write(f"{reason}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
