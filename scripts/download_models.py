"""Download the configured models (ASR, VAD, punctuation) into ASR_MODEL_PATH, then verify them.

Idempotent: a model already in the local cache is not fetched again, only verified. Workers
never download: they resolve models from this cache offline, and a running service's workers
pick the models up by themselves once they are here (they retry with back-off).

    uv run --extra engine python scripts/download_models.py

Progress: a `[n/3]` line per model, then ModelScope's progress bar per file (ModelScope checks
each file's hash as it downloads). Verification: every file the model's `configuration.json`
names must be present and non-empty (src/asr/models.py `verify_model_dir`); one line per model
at the end. Exit status 1 when any model could not be fetched or is incomplete.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from src.asr.models import (
    DOWNLOAD_COMMAND,
    ModelCheck,
    ModelNotFoundError,
    configured_models,
    download_target,
    names_a_directory,
    resolve_model_dir,
    verify_model_dir,
)
from src.config import Settings, get_settings

Fetch = Callable[[str, Path], Path]


def snapshot(model: str, target: Path) -> Path:
    """ModelScope's download of one model into `target` (the engine extra's modelscope)."""
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise RuntimeError(f"modelscope is not installed: run `{DOWNLOAD_COMMAND}`") from exc

    return Path(snapshot_download(model, local_dir=str(target)))


def describe(check: ModelCheck) -> str:
    if not check.ok:
        return f"FAILED: {'; '.join(check.problems)} ({check.path})"
    return f"ok: {check.files} files, {check.size_bytes / 1e6:.1f} MB in {check.path}"


def obtain(key: str, model: str, root: Path, fetch: Fetch, step: str) -> ModelCheck:
    """The model's directory, fetched when the cache lacks it, and what verifying it found."""
    try:
        local = resolve_model_dir(model, root, role=key)
        print(f"{step} {key}: {model} is already in {local}", flush=True)
    except ModelNotFoundError as exc:
        target = download_target(model, root)
        if names_a_directory(model):
            return ModelCheck(target, problems=[str(exc)])  # a directory: nothing to download
        print(f"{step} {key}: downloading {model} into {target}", flush=True)
        try:
            local = fetch(model, target)
        except Exception as err:  # network, hub, disk: report it with the others
            return ModelCheck(target, problems=[f"download failed: {type(err).__name__}: {err}"])
    return verify_model_dir(local)


def download(settings: Settings, fetch: Fetch = snapshot) -> int:
    """Fetch what is missing, verify everything, print one line per model; 0 when all are ok."""
    wanted = configured_models(settings)
    checks: dict[str, ModelCheck] = {}
    for n, (key, model) in enumerate(wanted.items(), 1):
        checks[key] = obtain(key, model, settings.asr_model_path, fetch, f"[{n}/{len(wanted)}]")
    print("verified:")
    for key, check in checks.items():
        print(f"  {key}: {describe(check)}")
    return 0 if all(check.ok for check in checks.values()) else 1


def main() -> int:
    return download(get_settings())


if __name__ == "__main__":
    sys.exit(main())
