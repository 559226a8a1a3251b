"""GET /history after more tasks finished than it keeps: the newest MAX_HISTORY_RECORDS, newest
first, in the Redis list and in the answer alike. Asserting the exact ids and their order is what
tells "the newest 10" from "the oldest 10" on a clean database."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from src.config import Settings
from src.records.redis_client import HISTORY_KEY
from src.results import history
from tests.support.records import finished


def test_history_keeps_the_newest_ten_newest_first(
    client: TestClient, conn: redis.Redis, settings: Settings
) -> None:
    keep = settings.max_history_records
    assert keep == 10
    tasks = [finished(n) for n in range(1, keep + 3)]  # finished in this order
    for task in tasks:
        history.record(conn, settings.history_file, task, keep)
    newest_first = [t.task_id for t in reversed(tasks)][:keep]

    stored = [
        history.HistoryEntry.model_validate_json(raw).task_id
        for raw in conn.lrange(HISTORY_KEY, 0, -1)
    ]
    assert stored == newest_first
    body = client.get("/api/v1/asr/history", params={"limit": 50}).json()
    assert body["total"] == keep
    assert [r["task_id"] for r in body["records"]] == newest_first
    assert [r["text"] for r in body["records"]] == [f"第{n}条" for n in range(keep + 2, 2, -1)]
