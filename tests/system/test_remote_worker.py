"""A worker on another host, one that does not share the API's disk: it fetches each recording
from the API over HTTP (WORKER_API_URL, API_KEY) and sends results back through Redis.

The other "host" is made for real where the kernel allows it: a network namespace with a veth
pair to this one, its own UTS namespace (so its hostname differs, as the dead-worker recovery
sees hosts) and its own mount namespace in which the API's storage is hidden under an empty
tmpfs. Redis and uvicorn listen on this side's veth address. Without namespaces those tests skip
and say why; `test_worker_with_its_own_storage_fetches_over_http` runs anyway, with a worker
that has its own STORAGE_PATH on this host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from src.records import task_store
from tests.support.audio_samples import SPEECH_WAV
from tests.support.processes import (
    ApiProcess,
    RedisServer,
    WorkerProcess,
    api_env,
    service_env,
    wait_for,
)
from tests.support.reliability import record
from tests.support.tiny_models import ModelDirs

pytestmark = pytest.mark.slow

API_KEY = "remote-worker-test-key"
REMOTE_HOSTNAME = "gpu-box-2"
# A /30 of its own per run (this side .1, the namespace .2), so parallel runs do not collide.
NET = f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}"
FETCHED = re.compile(r"fetched from the API into (\S+) \((\d+) bytes in ([\d.]+)s\)")


@dataclass(frozen=True)
class Netns:
    name: str
    here: str  # this side's veth address: Redis and the API listen on it
    there: str


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns | None]:
    """A namespace joined to this one by a veth pair; None (with the reason kept for the skip)
    where `ip netns` is not permitted."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        yield None
        return
    tag = f"{os.getpid() % 100000}"
    ns, near, far = f"asr-remote-{tag}", f"asrr{tag}a", f"asrr{tag}b"
    here, there = f"{NET}.1", f"{NET}.2"
    made = _ip("netns", "add", ns)
    if made.returncode != 0:
        NETNS_ERRORS.append(made.stderr.strip())
        yield None
        return
    try:
        steps = [
            ("link", "add", near, "type", "veth", "peer", "name", far),
            ("link", "set", far, "netns", ns),
            ("addr", "add", f"{here}/30", "dev", near),
            ("link", "set", near, "up"),
            ("netns", "exec", ns, "ip", "addr", "add", f"{there}/30", "dev", far),
            ("netns", "exec", ns, "ip", "link", "set", far, "up"),
            ("netns", "exec", ns, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                NETNS_ERRORS.append(f"ip {' '.join(step)}: {done.stderr.strip()}")
                yield None
                return
        yield Netns(ns, here, there)
    finally:
        _ip("netns", "del", ns)  # takes its veth end, and so the pair, with it
        _ip("link", "del", near)


NETNS_ERRORS: list[str] = []


@dataclass
class ApiBox:
    """The API's host: Redis, uvicorn and the recordings."""

    redis: RedisServer
    api: ApiProcess
    storage: Path
    address: str

    def conn(self) -> redis.Redis:
        return self.redis.client()


@pytest.fixture(scope="module")
def api_box(tmp_path_factory: pytest.TempPathFactory, netns: Netns | None) -> Iterator[ApiBox]:
    base = tmp_path_factory.mktemp("api-box")
    address = netns.here if netns else "127.0.0.1"
    server = RedisServer(base / "redis", bind=f"127.0.0.1 {address}".strip()).start()
    storage = base / "storage"
    env = api_env(server.port, storage, API_KEY=API_KEY)
    api = ApiProcess(env, base / "uvicorn.out", host=address)
    try:
        api.start(None)
        wait_for(lambda: _reachable(api.url), 60, 0.1, "uvicorn")
        yield ApiBox(server, api, storage, address)
    finally:
        api.stop()
        server.stop()


def _reachable(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=1).status_code in (200, 503)
    except httpx.TransportError:
        return False


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop(10)


def _headers() -> dict[str, str]:
    return {"X-API-Key": API_KEY}


def submit(box: ApiBox, path: Path) -> str:
    with open(path, "rb") as fh:
        resp = httpx.post(
            f"{box.api.url}/api/v1/asr/submit",
            files={"audio": (path.name, fh)},
            headers=_headers(),
            timeout=30,
        )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["task_id"])


def result(box: ApiBox, task_id: str) -> dict:
    resp = httpx.get(f"{box.api.url}/api/v1/asr/result/{task_id}", headers=_headers(), timeout=10)
    return dict(resp.json())


def worker_of(box: ApiBox, task_id: str) -> str | None:
    """Who ran (or runs) the task, from its record."""
    record = task_store.load(box.conn(), task_id)
    return record.worker_id if record else None


def wait_done(box: ApiBox, task_id: str, timeout: float = 120) -> dict:
    def finished() -> dict | None:
        body = result(box, task_id)
        return body if body["status"] in ("done", "failed") else None

    return wait_for(finished, timeout, 0.05, f"{task_id} finished")  # type: ignore[return-value]


def remote_worker(
    box: ApiBox, ns: Netns, name: str, base: Path, models: ModelDirs
) -> WorkerProcess:
    """A worker on the other "host": its network, hostname and mounts; the API's storage
    is an empty tmpfs there, so it has no way to the API's files but HTTP."""
    storage = base / name
    env = service_env(
        box.redis.port,
        storage,
        {"asr": models.asr, "vad": models.vad, "punc": models.punc},
        REDIS_HOST=box.address,
        WORKER_API_URL=box.api.url,
        API_KEY=API_KEY,
    )
    hide = f"mount -t tmpfs none {box.storage}"
    prefix = (
        *("ip", "netns", "exec", ns.name, "unshare", "--uts", "--mount", "sh", "-c"),
        f'hostname {REMOTE_HOSTNAME} && {hide} && exec "$0" "$@"',
    )
    return WorkerProcess(name, env, base, prefix=prefix).start()


def local_worker(
    box: ApiBox, name: str, base: Path, models: ModelDirs, **extra: str
) -> WorkerProcess:
    env = service_env(
        box.redis.port,
        box.storage,
        {"asr": models.asr, "vad": models.vad, "punc": models.punc},
        API_KEY=API_KEY,
        **extra,
    )
    return WorkerProcess(name, env, base).start()


def history_of(box: ApiBox, task_id: str) -> list[dict]:
    """The task's lines in the API host's JSONL file, once there is one (the API appends a
    remote worker's line within a second), and a moment later, when a second would be there."""
    path = box.storage / "logs" / "asr_history.jsonl"

    def lines() -> list[dict]:
        if not path.exists():
            return []
        return [
            x for x in map(json.loads, path.read_text().splitlines()) if x["task_id"] == task_id
        ]

    wait_for(lines, 10, 0.05, f"history line of {task_id}")
    time.sleep(0.5)
    return lines()


def fetches(worker: WorkerProcess) -> list[tuple[Path, int, float]]:
    return [(Path(p), int(n), float(s)) for p, n, s in FETCHED.findall(worker.output())]


def needs_netns(ns: Netns | None) -> Netns:
    if ns is None:
        pytest.skip(f"network namespaces are not permitted here: {'; '.join(NETNS_ERRORS)}")
    return ns


def test_worker_with_its_own_storage_fetches_over_http(
    api_box: ApiBox,
    model_dirs: ModelDirs,
    workers: list[WorkerProcess],
    tmp_path: Path,
):
    """No namespaces: a worker whose STORAGE_PATH is not the API's downloads the recording,
    transcribes it, deletes its copy, and its path never resolves to the API's directory."""
    conn = api_box.conn()
    own = tmp_path / "worker-storage"
    env = service_env(
        api_box.redis.port,
        own,
        {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc},
        WORKER_API_URL=api_box.api.url,
        API_KEY=API_KEY,
    )
    worker = WorkerProcess("own-disk-worker-1", env, tmp_path).start()
    workers.append(worker)
    worker.wait_ready(conn)
    task_id = submit(api_box, SPEECH_WAV)
    body = wait_done(api_box, task_id)
    assert body["status"] == "done", body
    assert worker_of(api_box, task_id) == "own-disk-worker-1"
    assert body["text"]
    [(copy, size, _seconds)] = fetches(worker)
    assert copy.parent == own / "fetched"
    assert size == next((api_box.storage / "recordings").glob(f"{task_id}.*")).stat().st_size
    assert not copy.exists()  # deleted after the job
    assert str(api_box.storage) not in worker.output()
    assert [x["status"] for x in history_of(api_box, task_id)] == ["success"]
    assert not (own / "logs" / "asr_history.jsonl").exists()
    assert not (own / "recordings").exists() or not any((own / "recordings").iterdir())


def test_local_file_is_read_in_place(
    api_box: ApiBox, model_dirs: ModelDirs, workers: list[WorkerProcess], tmp_path: Path
):
    """With WORKER_API_URL set, a worker that shares the API's disk still opens the file in
    place: nothing is downloaded on one box."""
    conn = api_box.conn()
    worker = local_worker(
        api_box, "box1-worker-1", tmp_path, model_dirs, WORKER_API_URL=api_box.api.url
    )
    workers.append(worker)
    worker.wait_ready(conn)
    task_id = submit(api_box, SPEECH_WAV)
    body = wait_done(api_box, task_id)
    assert body["status"] == "done", body
    assert fetches(worker) == []


def test_worker_in_another_netns_transcribes_through_the_api(
    api_box: ApiBox,
    netns: Netns | None,
    model_dirs: ModelDirs,
    workers: list[WorkerProcess],
    tmp_path: Path,
):
    ns = needs_netns(netns)
    conn = api_box.conn()
    worker = remote_worker(api_box, ns, "gpu2-worker-1", tmp_path, model_dirs)
    workers.append(worker)
    beacon = worker.wait_ready(conn)
    assert beacon["hostname"] == REMOTE_HOSTNAME
    health = httpx.get(f"{api_box.api.url}/api/v1/health", timeout=10).json()
    shown = {w["name"]: w for w in health["workers"]}
    assert shown["gpu2-worker-1"]["hostname"] == REMOTE_HOSTNAME
    assert shown["gpu2-worker-1"]["device"] == "cpu"
    # What the operator runs on the API box: the worker's name (with its GPU, when a launcher
    # pins one: make_slots, asr-remote-worker@.service) and the host it runs on.
    rq_info = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--only-workers", "--url", api_box.redis.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"gpu2-worker-1 ({REMOTE_HOSTNAME} " in rq_info, rq_info

    timings, done = [], []
    for _ in range(3):
        task_id = submit(api_box, SPEECH_WAV)
        body = wait_done(api_box, task_id)
        assert body["status"] == "done", body
        assert worker_of(api_box, task_id) == "gpu2-worker-1"
        done.append(task_id)
        assert body["text"]
        timings.append(task_store.load(conn, task_id).processing_time)  # type: ignore[union-attr]
    for task_id in done:
        assert [x["status"] for x in history_of(api_box, task_id)] == ["success"]
    assert not (tmp_path / "gpu2-worker-1" / "logs" / "asr_history.jsonl").exists()
    got = fetches(worker)
    assert len(got) == 3
    assert all(copy.parent == tmp_path / "gpu2-worker-1" / "fetched" for copy, _, _ in got)
    assert not any((tmp_path / "gpu2-worker-1" / "fetched").iterdir())
    seconds = sorted(s for _, _, s in got)
    record(
        "remote worker fetch",
        jobs=len(got),
        bytes=got[0][1],
        fetch_ms_median=round(seconds[1] * 1000, 1),
        fetch_ms_max=round(seconds[-1] * 1000, 1),
        processing_s_median=sorted(timings)[1],
    )


def test_killed_remote_workers_job_is_taken_by_a_worker_on_the_api_host(
    api_box: ApiBox,
    netns: Netns | None,
    model_dirs: ModelDirs,
    workers: list[WorkerProcess],
    tmp_path: Path,
    long_clip: Path,
):
    """The worker on the API host is loaded but paused (SIGSTOP) while the remote one takes
    the 300 s clip, so the job is surely the remote's; it resumes the moment the remote dies."""
    ns = needs_netns(netns)
    conn = api_box.conn()
    local = local_worker(api_box, "box1-worker-2", tmp_path, model_dirs)
    workers.append(local)
    local.wait_ready(conn)
    local.kill_group(signal.SIGSTOP)
    remote = remote_worker(api_box, ns, "gpu3-worker-1", tmp_path, model_dirs)
    workers.append(remote)
    try:
        remote.wait_ready(conn)
        task_id = submit(api_box, long_clip)
        wait_for(
            lambda: result(api_box, task_id)["attempts"] >= 1 and fetches(remote),
            60,
            0.05,
            "the remote worker started the long clip",
        )
        assert worker_of(api_box, task_id) == "gpu3-worker-1"
        remote.kill_group(signal.SIGKILL)
        remote.proc.wait(10)  # type: ignore[union-attr]
        killed = time.monotonic()
    finally:
        local.kill_group(signal.SIGCONT)
    assert result(api_box, task_id)["status"] == "processing"

    def taken_over() -> bool:
        body = result(api_box, task_id)
        return body["attempts"] >= 2 and worker_of(api_box, task_id) == "box1-worker-2"

    wait_for(taken_over, 120, 0.05, "the job taken by the worker on the API host")
    pickup_s = time.monotonic() - killed
    body = wait_done(api_box, task_id, 180)
    assert body["status"] == "done", body
    assert body["attempts"] == 2
    assert [x["status"] for x in history_of(api_box, task_id)] == ["success"]
    record("remote worker SIGKILL mid-job", pickup_s=round(pickup_s, 2))
    assert pickup_s < 30
