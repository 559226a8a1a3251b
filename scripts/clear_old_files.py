"""Apply the recordings retention policy by hand: keep the newest MAX_RECORDINGS.

Same rule as every upload applies (src/uploads/recordings.py): the oldest recordings beyond the
limit go, except those of tasks still queued or running. Also removes files in the recordings
directory that the index does not know (left by a crash) and partial uploads older than an hour.

    uv run python scripts/clear_old_files.py [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import time

from src.config import get_settings
from src.records.redis_client import api_connection
from src.uploads.recordings import AUDIO_INDEX_KEY, enforce_retention


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    args = parser.parse_args()
    settings = get_settings()
    conn = api_connection(settings)
    known = {m.decode() for m in conn.zrange(AUDIO_INDEX_KEY, 0, -1)}
    directory = settings.recordings_dir
    stray = []
    if directory.is_dir():
        for path in directory.iterdir():
            if not path.is_file():
                continue
            if path.name.startswith("."):
                if path.stat().st_mtime < time.time() - 3600:
                    stray.append(path)
            elif path.name not in known:
                stray.append(path)
    if args.dry_run:
        over = max(0, len(known) - settings.max_recordings)
        print(f"{len(known)} indexed recordings, limit {settings.max_recordings}: {over} over")
        for path in stray:
            print(f"unindexed: {path}")
        return 0
    removed = enforce_retention(conn, settings)
    for path in stray:
        path.unlink(missing_ok=True)
    print(f"removed {len(removed)} old recording(s) and {len(stray)} unindexed file(s)")
    for name in removed:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
