"""Real processes for tests: a private redis-server, ASR worker processes, a uvicorn API.

Every process is started in its own session (process group) so a test can kill exactly it, and
stopped at teardown, whatever the test did.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from src.api.server import HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split()[3])


def wait_for(
    check: Callable[[], object], timeout: float, interval: float = 0.1, what: str = ""
) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}")


def spawn(
    args: list[str], env: dict[str, str], log_path: Path, prefix: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """`python ARGS` from the repository root in its own process group, output to `log_path`;
    under `prefix` when given (e.g. `ip netns exec NS`, which execs, so the pid stays python's)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*prefix, sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class RedisServer:
    """A redis-server of our own on a free port, data in `directory`."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        appendonly: bool = True,
        bind: str = "127.0.0.1",
        replicaof: int | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.bind = bind  # more addresses, space-separated: "127.0.0.1 10.0.0.1"
        self.replicaof = replicaof  # the port of a master on 127.0.0.1 to replicate
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.arguments(binary),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._ping, 10, what=f"redis-server on {self.port}")
        return self

    def arguments(self, binary: str) -> list[str]:
        """The deployment's redis.conf, copied: a sentinel that promotes a replica makes it
        CONFIG REWRITE the file it was started with, which must not be the repository's."""
        conf = self.directory / "redis.conf"
        shutil.copyfile(ROOT / "deploy" / "redis" / "redis.conf", conf)
        replica = ["--replicaof", "127.0.0.1", str(self.replicaof)] if self.replicaof else []
        return [
            binary,
            str(conf),
            "--port",
            str(self.port),
            "--bind",
            *self.bind.split(),
            # another address is a test's private veth: let a namespace's worker in
            "--protected-mode",
            "yes" if self.bind == "127.0.0.1" else "no",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--save",
            "",
            "--logfile",
            str(self.directory / "redis.log"),
            *replica,
        ]

    def _ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.exceptions.ConnectionError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class SentinelServer(RedisServer):
    """`redis-server --sentinel` (the same binary as the Debian redis-sentinel package runs)
    watching the master on 127.0.0.1:`master_port` as `name`. Sentinel rewrites its config file
    as it learns the topology, so each gets its own in `directory`."""

    def __init__(
        self,
        directory: Path,
        master_port: int,
        name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        super().__init__(directory)
        self.settings = [
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {name} {down_after_ms}",
            f"sentinel failover-timeout {name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def arguments(self, binary: str) -> list[str]:
        conf = self.directory / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {self.directory / 'sentinel.log'}",
            *self.settings,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return [binary, str(conf), "--sentinel"]


def service_env(
    redis_port: int, storage: Path, models: dict[str, Path], **extra: str
) -> dict[str, str]:
    """Environment for a worker/API process: the settings object reads these, nothing else.
    The result cache is off (RESULT_CACHE_SECONDS=0) unless `extra` turns it on: the tests and
    benchmarks submit the same samples again and again to measure the work, not the cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "RQ_", "REDIS_"))}
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_port),
        REDIS_DB="0",
        STORAGE_PATH=str(storage),
        ASR_MODEL=str(models["asr"]),
        ASR_VAD_MODEL=str(models["vad"]),
        ASR_PUNC_MODEL=str(models["punc"]),
        ASR_DEVICE="cpu",
        ASR_CPU_THREADS="1",
        ASR_HOTWORDS_PATH=str(storage / "hotwords.txt"),
        LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
        RESULT_CACHE_SECONDS="0",
    )
    env.update(extra)
    return env


def api_env(redis_port: int, storage: Path, **settings: str) -> dict[str, str]:
    """The environment of a uvicorn process: ours, less any service setting, plus these (the
    result cache off unless they turn it on, as in `service_env`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ASR_", "RQ_", "REDIS_", "API_", "STORAGE_", "MAX_", "LOG_"))
    }
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_port),
        STORAGE_PATH=str(storage),
        RESULT_CACHE_SECONDS="0",
    )
    env.update(settings)
    return env


class WorkerProcess:
    """`python -m src.worker --name NAME` as a real process in its own process group."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, prefix: tuple[str, ...] = ()
    ) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.out"
        self.prefix = prefix  # what it runs under, e.g. `ip netns exec NS`: another "host"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = spawn(
            ["-m", "src.worker", "--name", self.name], self.env, self.log_path, self.prefix
        )
        return self

    def wait_ready(self, conn: redis.Redis, timeout: float = 180) -> dict:
        def ready() -> dict | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.output()[-3000:]}")
            raw = conn.get(f"asr:worker:{self.name}")
            beacon = json.loads(raw) if raw else None
            # Not a beacon a killed predecessor of the same name left behind (15 s TTL).
            return beacon if beacon and beacon.get("pid") == self.proc.pid else None

        return wait_for(ready, timeout, 0.2, f"{self.name} readiness")  # type: ignore[return-value]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
                self.proc.wait(5)
        self.proc = None


class ApiProcess:
    """`uvicorn src.api.main:app` as a real process, configured by its environment alone."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.env = env
        self.host = host  # the address uvicorn binds, e.g. a veth's for a worker in a netns
        self.port = free_port()
        self.log_path = log_path
        self.args = args
        self.prefix = prefix  # what uvicorn runs under, e.g. `unshare` into a network namespace
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self, ready_path: str | None = "/api/v1/asr/queue/status") -> ApiProcess:
        """Ready when `ready_path` answers 2xx; with None, when uvicorn logs that it listens (for
        a `prefix` that puts it where this process cannot connect)."""
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "uvicorn",
                "src.api.main:app",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--no-access-log",
                "--http",  # as scripts/serve.sh runs it: with the header deadline
                HTTP_PROTOCOL,
                *self.args,
            ],
            cwd=ROOT,
            env={**self.env, "API_HOST": self.host, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text(errors="replace")[-3000:])
            if ready_path is None:
                return "Uvicorn running on" in self.log_path.read_text(errors="replace")
            try:
                return httpx.get(f"{self.url}{ready_path}", timeout=1).is_success
            except httpx.TransportError:
                return False

        wait_for(up, 60, 0.1, "uvicorn")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class BotProcess:
    """`python -m src.bot` (what scripts/bot.sh runs) as a real process, configured by BOT_*
    variables alone."""

    def __init__(self, settings: dict[str, str], log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
        self.env = {**env, **settings, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BotProcess:
        self.proc = spawn(["-m", "src.bot"], self.env, self.log_path)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the bot exited: {self.output()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
