"""A task's recording for the worker: the file in place when this host has it, else a download
from the API (a worker on another host, WORKER_API_URL set).

The API keeps recordings on its own disk and serves them at `GET /api/v1/asr/audio/{task_id}`
behind API_KEY; a worker that does not share that disk streams the bytes into a temporary file
under its own STORAGE_PATH and deletes it when the job ends. A local file is never copied.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loguru import logger

from src.config import Settings
from src.uploads import recordings
from src.uploads.recordings import CHUNK_SIZE


class RecordingFetchError(OSError):
    """The API could not be asked for a recording, or answered with an error other than 404."""


def audio_url(settings: Settings, task_id: str) -> str:
    base = (settings.worker_api_url or "").rstrip("/")
    return f"{base}/api/v1/asr/audio/{task_id}"


def _download(settings: Settings, task_id: str, dest: Path) -> bool:
    """Stream the task's recording into `dest`; False when the API no longer has it (404)."""
    # Imported here, not with the module: a third of a second that a worker on the API's own
    # disk (which never downloads) would otherwise add to its first job.
    import httpx

    headers = {}
    if settings.api_key is not None:
        headers["X-API-Key"] = settings.api_key.get_secret_value()
    timeout = httpx.Timeout(settings.worker_fetch_timeout_seconds)
    try:
        with httpx.stream(
            "GET", audio_url(settings, task_id), headers=headers, timeout=timeout
        ) as r:
            if r.status_code == httpx.codes.NOT_FOUND:
                return False
            if not r.is_success:
                raise RecordingFetchError(f"HTTP {r.status_code}")
            with open(dest, "wb") as out:
                for chunk in r.iter_bytes(CHUNK_SIZE):
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise RecordingFetchError(f"{type(exc).__name__}: {exc}") from exc
    return True


@contextlib.contextmanager
def recording(settings: Settings, name: str) -> Iterator[Path | None]:
    """The recording `name` as a path for the length of the block; None when it is gone.

    The local file when there is one (one box, or a shared disk); else, with WORKER_API_URL,
    a downloaded copy that the block's end deletes."""
    path = recordings.recording_path(settings, name)
    if path is not None or settings.worker_api_url is None or not recordings.plain_name(name):
        yield path
        return
    settings.fetched_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=settings.fetched_dir, prefix=".", suffix=Path(name).suffix)
    os.close(fd)
    copy = Path(temp)
    try:
        began = time.perf_counter()
        found = _download(settings, recordings.task_id_of(name), copy)
        if found:
            logger.info(
                f"recording {name} fetched from the API into {copy} "
                f"({copy.stat().st_size} bytes in {time.perf_counter() - began:.3f}s)"
            )
        yield copy if found else None
    finally:
        copy.unlink(missing_ok=True)
