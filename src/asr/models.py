"""Where model directories come from: a local path, or the ModelScope cache under ASR_MODEL_PATH.

Resolution is purely local on purpose: a worker must start offline, and FunASR given a hub name
without network fails with a misleading "not registered" error. Downloading is the job of
`scripts/download_models.py`.
"""

from __future__ import annotations

from pathlib import Path


class ModelNotFoundError(FileNotFoundError):
    """A configured model is neither a directory nor in the local cache."""


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "model.pt").is_file()


def cache_candidates(model: str, cache_root: Path) -> list[Path]:
    """Layouts ModelScope has used for `org/name` under a cache root, newest first."""
    return [
        cache_root / "models" / model,
        cache_root / model,
        cache_root / "hub" / "models" / model,
        cache_root / model.replace(".", "___"),
        cache_root / "models" / model.replace(".", "___"),
    ]


def download_target(model: str, cache_root: Path) -> Path:
    """Where `scripts/download_models.py` puts a hub model: the first layout we look in."""
    return cache_candidates(model, cache_root)[0]


def resolve_model_dir(model: str, cache_root: Path, *, role: str = "model") -> Path:
    """Turn a setting (directory or ModelScope id) into a local model directory, offline."""
    direct = Path(model).expanduser()
    if direct.is_dir():
        if not _is_model_dir(direct):
            raise ModelNotFoundError(
                f"{role} directory {direct} has no config.yaml and model.pt; "
                "it is not a FunASR model directory"
            )
        return direct
    for candidate in cache_candidates(model, cache_root.expanduser()):
        if _is_model_dir(candidate):
            return candidate
    raise ModelNotFoundError(
        f"{role} model {model!r} is not in the local cache {cache_root}; "
        "run `uv run python scripts/download_models.py` first "
        "(or set the model to a local directory in .env)"
    )
