"""Decode and VAD in their own processes, so the next clips are ready while the GPU decodes.

On a GPU the PyAV decode and FSMN-VAD of a clip run on the CPU and took as long as the ASR and
punctuation together (report/PERFORMANCE.md). A worker with prep processes
(`ASR_PREP_PROCESSES`) hands each member of a pooled pass to this pool and runs the ASR waves
on the GPU as members come back (src/asr/pooling.py). Processes rather than threads: the VAD's
frame-by-frame state machine is Python and would hold the GIL against the GPU's feeder.

Each process loads only the small FSMN-VAD, on the CPU, once; the ASR model stays one per GPU
in the worker. A process that dies (a crashing decoder, the kernel's OOM killer) breaks only
this pool: its clips are prepared again in the worker, as they would be without a pool, and
the next pass starts a fresh pool.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.asr.transcript import MIN_SAMPLES
from src.media.audio import AudioError, load_audio

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)

Audio = np.ndarray | str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class Prepared:
    """One clip's samples and VAD output, with the seconds its preparation took."""

    samples: np.ndarray
    vad: list[dict[str, Any]]
    seconds: float


def samples_of(audio: Audio, max_audio_seconds: float | None) -> np.ndarray:
    """The clip as 16 kHz mono float32; AudioError when it holds no samples."""
    if isinstance(audio, np.ndarray):
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    else:
        samples, _ = load_audio(audio, max_duration_s=max_audio_seconds)
    if len(samples) == 0:
        raise AudioError("empty", "The audio contains no samples")
    return samples


@functools.cache
def _vad_model(vad_dir: str) -> Any:
    """This prep process's FSMN-VAD, built as AutoModel builds its `vad_model` (CPU, 1 thread)."""
    from src.asr.funasr_import import funasr

    return funasr.AutoModel(
        model=vad_dir,
        device="cpu",
        ncpu=1,
        disable_update=True,
        disable_pbar=True,
        disable_log=True,
    )


def die_with(parent: int) -> None:
    """Pool initializer: end with the worker, even a SIGKILLed one. A prep process otherwise
    waits on its queue for good, holding its memory, after the worker that fed it died."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def load_vad(vad_dir: str) -> int:
    """Pool start-up: load the VAD before the first clip arrives; the pid says which process."""
    _vad_model(vad_dir)
    return os.getpid()


def prepare(
    vad_dir: str, audio: Audio, max_audio_seconds: float | None, cfg: dict[str, Any]
) -> Prepared:
    """Runs in a prep process: decode, then VAD with the options the worker's own call passes."""
    started = time.perf_counter()
    samples = samples_of(audio, max_audio_seconds)
    vad: list[dict[str, Any]] = []
    if len(samples) >= MIN_SAMPLES:
        vad = _vad_model(vad_dir).inference(samples, **cfg)
    return Prepared(samples=samples, vad=vad, seconds=time.perf_counter() - started)


class PrepPool:
    """`processes` spawned prep processes, loaded and ready when the constructor returns.

    Spawned, not forked: the worker may hold a CUDA context, which a fork cannot share.
    """

    def __init__(self, vad_dir: Path, processes: int, max_audio_seconds: float | None) -> None:
        self.vad_dir = str(vad_dir)
        self.processes = processes
        self.max_audio_seconds = max_audio_seconds
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        started = time.perf_counter()
        pool = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with,
            initargs=(os.getpid(),),
        )
        # All submitted at once, so the executor spawns one process per call.
        pids = set(pool.map(load_vad, [self.vad_dir] * self.processes))
        log.info(
            "%d prep process(es) ready in %.1fs: %s",
            self.processes,
            time.perf_counter() - started,
            sorted(pids),
        )
        return pool

    def submit(self, audio: Audio, cfg: dict[str, Any]) -> Future[Prepared]:
        """Queue one clip. A broken pool is replaced first, so one crash costs one pass."""
        try:
            return self._pool.submit(prepare, self.vad_dir, audio, self.max_audio_seconds, cfg)
        except BrokenProcessPool:
            log.warning("a prep process died; starting a fresh pool")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(prepare, self.vad_dir, audio, self.max_audio_seconds, cfg)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
