"""A typed Python client for this service, sync and async, on httpx.

It is what a bot or a sibling service imports: it stands alone (httpx, pydantic and websockets,
nothing else of `src`), so it can be vendored or packaged on its own.

    from src.client import ASRClient

    with ASRClient("http://127.0.0.1:8000", api_key="...") as asr:
        task = asr.submit("voice.ogg", hotwords=["张三"], idempotency_key="tg-918273645")
        done = asr.wait(task.task_id, timeout=120)   # WebSocket, or long polls if it fails
        print(done.text)

`AsyncASRClient` has the same methods as coroutines, and `follow(task_id)`, an async iterator
of every state the task goes through.
"""

from src.client.client import ASRClient, AsyncASRClient
from src.client.models import ASRError, HistoryItem, Sentence, ServiceUnavailable, Task

__all__ = [
    "ASRClient",
    "ASRError",
    "AsyncASRClient",
    "HistoryItem",
    "Sentence",
    "ServiceUnavailable",
    "Task",
]
