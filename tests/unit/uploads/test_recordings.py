"""src/uploads/recordings.py: recordings on disk, their index in Redis, and retention."""

from __future__ import annotations

from pathlib import Path

import redis

from src.records.redis_client import AUDIO_PINNED_KEY
from src.uploads import recordings
from tests.support.fixtures import make_settings


def test_retention_skips_pinned_recordings_without_reading_their_tasks(
    conn: redis.Redis, storage: Path
):
    settings = make_settings(6379, storage, max_recordings=3)
    settings.recordings_dir.mkdir(parents=True)
    names = [f"2026-11-28_{i:03d}_{'0' * 24}.ogg" for i in range(10)]
    for i, name in enumerate(names):
        (settings.recordings_dir / name).write_bytes(b"x")
        recordings.index_recording(conn, name, float(i))  # pinned: queued
    for name in names[:4]:  # the four oldest finished (no task record left: expired)
        recordings.unpin(conn, name)
    removed = recordings.enforce_retention(conn, settings)
    assert sorted(removed) == names[:4]
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == names[4:]
    recordings.delete_recording(conn, settings, names[5])
    assert not conn.sismember(AUDIO_PINNED_KEY, names[5])
