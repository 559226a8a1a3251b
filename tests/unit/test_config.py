"""src/config.py: what Settings derive from the values they are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import DEFAULT_BATCH_JOBS_CPU, DEFAULT_BATCH_JOBS_GPU
from tests.support.fixtures import make_settings


def test_cpu_threads_share_the_cores_among_workers_unless_set(
    monkeypatch: pytest.MonkeyPatch, storage: Path
):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    assert make_settings(6379, storage, rq_worker_count=2).cpu_threads == 4
    assert make_settings(6379, storage, rq_worker_count=16).cpu_threads == 1
    assert make_settings(6379, storage, asr_cpu_threads=3).cpu_threads == 3


def test_batching_defaults_by_device_and_can_be_set(storage: Path):
    assert make_settings(6379, storage, asr_device="cuda").batch_jobs == DEFAULT_BATCH_JOBS_GPU
    assert make_settings(6379, storage, asr_device="cpu").batch_jobs == DEFAULT_BATCH_JOBS_CPU
    assert make_settings(6379, storage, asr_device="cpu", asr_batch_jobs=4).batch_jobs == 4
