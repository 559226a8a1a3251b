"""Download the configured models (ASR, VAD, punctuation) into ASR_MODEL_PATH, once.

Idempotent: a model already in the local cache is not fetched again. Prints each local
directory. Workers never download: they resolve models from this cache offline.

    uv run python scripts/download_models.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from src.asr.models import ModelNotFoundError, download_target, resolve_model_dir
from src.config import get_settings


def main() -> int:
    settings = get_settings()
    root = settings.asr_model_path
    wanted = {
        "ASR_MODEL": settings.asr_model,
        "ASR_VAD_MODEL": settings.asr_vad_model,
        "ASR_PUNC_MODEL": settings.asr_punc_model,
    }
    for key, model in wanted.items():
        try:
            local = resolve_model_dir(model, root, role=key)
            print(f"{key}: {model} -> {local} (already present)")
            continue
        except ModelNotFoundError:
            if Path(model).expanduser().exists():
                print(f"{key}: {model} is a local path but not a model directory", file=sys.stderr)
                return 1
        from modelscope import snapshot_download  # engine extra; shows a progress bar per file

        target = download_target(model, root)
        print(f"{key}: downloading {model} into {target}")
        path = snapshot_download(model, local_dir=str(target))
        print(f"{key}: {model} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
