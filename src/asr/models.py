"""Where model directories come from: a local path, or the ModelScope cache under ASR_MODEL_PATH.

Resolution is purely local on purpose: a worker must start offline, and FunASR given a hub name
without network fails with a misleading "not registered" error. Downloading is the job of
`scripts/download_models.py`. Nothing here imports torch or FunASR, so `scripts/serve.sh` can run
the same check before it starts anything (src/asr/preflight.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from src.config import Settings

DOWNLOAD_COMMAND = "uv run --extra engine python scripts/download_models.py"
# What FunASR's AutoModel cannot load a directory without.
MODEL_FILES = ("config.yaml", "model.pt")
# ModelScope writes it into every model it fetches; FunASR reads `file_path_metas` from it.
MANIFEST = "configuration.json"


class ModelNotFoundError(FileNotFoundError):
    """A configured model is neither a model directory nor in the local cache."""


def configured_models(settings: Settings) -> dict[str, str]:
    """The ASR engine's models by the setting that names them, so messages name the key to fix."""
    return {
        "ASR_MODEL": settings.asr_model,
        "ASR_VAD_MODEL": settings.asr_vad_model,
        "ASR_PUNC_MODEL": settings.asr_punc_model,
    }


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in MODEL_FILES)


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


def names_a_directory(model: str) -> bool:
    """A setting meant as a directory rather than a ModelScope id (`org/name`)."""
    return model.startswith(("/", "~", "./", "../")) or Path(model).expanduser().exists()


def _enumerate(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def resolve_model_dirs(models: Mapping[str, str], cache_root: Path) -> dict[str, Path]:
    """Turn each setting (a directory or a ModelScope id) into a local model directory, offline.

    All are checked before anything is raised, so one message names every model that is missing
    (a first run lacks all three) and says what to run.
    """
    root = cache_root.expanduser()
    found: dict[str, Path] = {}
    problems: list[str] = []
    absent: list[str] = []
    for key, model in models.items():
        if names_a_directory(model):
            direct = Path(model).expanduser()
            if _is_model_dir(direct):
                found[key] = direct
            elif direct.is_dir():
                problems.append(
                    f"{key} {direct} is not a FunASR model directory (no config.yaml and model.pt)"
                )
            else:
                problems.append(f"{key} {direct}: no such directory")
            continue
        hit = next((c for c in cache_candidates(model, root) if _is_model_dir(c)), None)
        if hit is None:
            absent.append(f"{key} {model}")
        else:
            found[key] = hit
    if absent:
        local = "it to a local model directory" if len(absent) == 1 else "them to local ones"
        problems.append(
            f"{_enumerate(absent)} not found in {root}: run `{DOWNLOAD_COMMAND}` (or set {local})"
        )
    if problems:
        raise ModelNotFoundError("; ".join(problems))
    return found


def resolve_model_dir(model: str, cache_root: Path, *, role: str = "model") -> Path:
    """One model's directory; see `resolve_model_dirs`."""
    return resolve_model_dirs({role: model}, cache_root)[role]


@dataclass(frozen=True)
class ModelCheck:
    """What a model directory holds, and what it should hold but does not."""

    path: Path
    files: int = 0
    size_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _manifest_files(metas: object) -> Iterator[str]:
    """File names in `file_path_metas`, which nests one level (tokenizer_conf: {token_list})."""
    if isinstance(metas, str):
        yield metas
    elif isinstance(metas, dict):
        for value in metas.values():
            yield from _manifest_files(value)


def verify_model_dir(path: Path) -> ModelCheck:
    """Check a fetched model directory against its own manifest, without loading it.

    ModelScope checks each file's hash as it downloads; what it cannot tell is whether the
    directory is complete for FunASR. Every file `configuration.json` names (weights, config,
    tokens, CMVN, ...) must be there and non-empty: a download cut short leaves files missing
    or empty.
    """
    if not path.is_dir():
        return ModelCheck(path, problems=[f"{path} is not a directory"])
    problems: list[str] = []
    expected = set(MODEL_FILES)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        expected.update(_manifest_files(manifest.get("file_path_metas", {})))
    except FileNotFoundError:
        problems.append(f"no {MANIFEST}")
    except (OSError, ValueError, AttributeError) as exc:
        problems.append(f"unreadable {MANIFEST}: {exc}")
    missing = sorted(name for name in expected if not (path / name).is_file())
    empty = sorted(name for name in expected - set(missing) if (path / name).stat().st_size == 0)
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if empty:
        problems.append(f"empty {', '.join(empty)}")
    files = [p for p in path.rglob("*") if p.is_file()]
    return ModelCheck(
        path=path,
        files=len(files),
        size_bytes=sum(p.stat().st_size for p in files),
        problems=problems,
    )
