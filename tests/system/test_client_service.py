"""The typed client (src/client) against the live service: a real uvicorn, the session's two
worker processes on the tiny FunASR models. `wait` is pushed over a real WebSocket, or falls back
to long polls; the async client follows every state; a closed socket becomes a typed error."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from src.client import ASRClient, ASRError, AsyncASRClient, Task
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Service
from tests.support.processes import ApiProcess, service_env
from tests.support.tiny_models import ModelDirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "client-live-key"
ORDER = {"queued": 0, "processing": 1, "done": 2, "failed": 2}


@pytest.fixture(scope="module")
def live(service: Service, model_dirs: ModelDirs) -> Iterator[str]:
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}
    env = service_env(service.redis_server.port, service.storage, models, API_KEY=KEY)
    api = ApiProcess(env, service.storage / "uvicorn-client.out").start("/api/v1/health")
    try:
        yield api.url
    finally:
        api.stop()


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "long-poll"])
def test_wait_returns_the_transcript(live: str, websocket: bool):
    with ASRClient(live, api_key=KEY) as asr:
        task = asr.submit(SPEECH_WAV)
        done = asr.wait(task.task_id, timeout=120, websocket=websocket)
        assert done.status == "done" and done.text and done.sentences
        assert asr.result(task.task_id).text == done.text


def test_wait_falls_back_to_long_polls_where_no_websocket_opens(live: str):
    with ASRClient(live, api_key=KEY) as asr:
        task = asr.submit(SPEECH_WAV)
        asr.base_url = "http://127.0.0.1:9"  # WebSockets go nowhere; HTTP keeps its own base
        assert asr.wait(task.task_id, timeout=120).status == "done"


async def follow_all(live: str) -> list[Task]:
    async with AsyncASRClient(live, api_key=KEY) as asr:
        task = await asr.submit(SPEECH_WAV, filename="voice.wav")
        states = [state async for state in asr.follow(task.task_id, timeout=120)]
        assert (await asr.wait(task.task_id, timeout=5)).text == states[-1].text
        return states


def test_the_async_client_follows_every_state_to_done(live: str):
    states = asyncio.run(follow_all(live))
    statuses = [s.status for s in states]
    assert statuses[-1] == "done" and states[-1].text, statuses
    assert all(ORDER[a] <= ORDER[b] for a, b in itertools.pairwise(statuses))


def test_following_an_unknown_task_is_a_404(live: str):
    with ASRClient(live, api_key=KEY) as asr, pytest.raises(ASRError) as unknown:
        list(asr.follow("2025-12-01_001_0a1b2c3d4e5f60718293a4b5", timeout=10))
    assert (unknown.value.status_code, unknown.value.error) == (404, "Task not found")


def test_a_wrong_key_on_the_socket_is_a_401(live: str):
    with ASRClient(live, api_key="wrong") as asr, pytest.raises(ASRError) as denied:
        list(asr.follow("2025-12-01_001_0a1b2c3d4e5f60718293a4b5", timeout=10))
    assert denied.value.status_code == 401
