"""Settings: the one place that reads the environment and `.env`.

Every other module takes a `Settings` (or the value it needs) instead of calling `os.environ`,
so a wrong value fails once, at start, with a message that names the key.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# FunASR's names for the default models (ModelScope ids); each may also be a local directory.
DEFAULT_ASR_MODEL = "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
DEFAULT_VAD_MODEL = "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"
DEFAULT_PUNC_MODEL = "iic/punc_ct-transformer_cn-en-common-vocab471067-large"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_MODEL_ALIAS_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")

PositiveInt = Annotated[int, Field(gt=0)]

# Cross-job batch sizes used when ASR_BATCH_JOBS is 0, from scripts/bench/batching.py.
DEFAULT_BATCH_JOBS_GPU = 8
DEFAULT_BATCH_JOBS_CPU = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), not the box's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_size(value: str | int) -> int:
    """'10 MB' -> bytes; the design writes sizes the way loguru's rotation does."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"expected a size such as '10 MB', got {value!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "B").upper()])


class Settings(BaseSettings):
    """Typed view of `.env`; see `.env.example` for what each key means."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Redis. REDIS_URL, when set, wins over host/port/db/password (e.g. rediss:// or a socket).
    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0)
    redis_password: str | None = None
    redis_url: str | None = None
    # Sentinel (src/records/redis_client.py): when REDIS_SENTINELS lists host:port addresses,
    # every connection asks them for the master named REDIS_SENTINEL_MASTER and follows a
    # failover; host/port/URL are then unused (REDIS_DB and REDIS_PASSWORD still apply).
    redis_sentinels: list[str] = []
    redis_sentinel_master: str = Field("mymaster", min_length=1)
    redis_sentinel_password: SecretStr | None = None

    # Engine: what each worker loads, as "module:function" taking these Settings and returning
    # an src.engine.interface.Engine. The ASR engine by default.
    worker_engine: str = Field("src.asr.engine:load", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    # A worker whose engine cannot load (models not downloaded yet) stays up and tries again
    # after 1 s, 2 s, 4 s ... up to this many seconds (src/worker/startup.py).
    worker_start_retry_seconds: float = Field(30.0, gt=0, le=3600)
    # A worker on a host that does not share the API's disk: a recording that is not under its
    # own STORAGE_PATH is downloaded from the API at this base URL (e.g. http://api-box:8000),
    # sending API_KEY, into STORAGE_PATH/fetched for the job's length. Empty: local files only.
    worker_api_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    # Put before each worker's name (PREFIXworker-1..N): one per host of workers, e.g. "gpu2-",
    # so names stay unique across hosts in /health, `rq info` and the recovery of dead workers.
    worker_name_prefix: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,32}$")
    # How long such a download may stall (connect, or between two reads) before the job fails.
    worker_fetch_timeout_seconds: float = Field(30.0, gt=0, le=3600)

    # ASR engine.
    asr_model_path: Path = Path("~/.cache/modelscope/hub")
    asr_model: str = DEFAULT_ASR_MODEL
    asr_vad_model: str = DEFAULT_VAD_MODEL
    asr_punc_model: str = DEFAULT_PUNC_MODEL
    asr_hotwords_path: Path = Path("src/asr/hotwords.txt")
    asr_use_gpu: bool = True
    asr_device: str = "auto"
    asr_batch_size: PositiveInt = 500
    asr_max_audio_seconds: float = Field(3 * 3600, gt=0)
    asr_languages: list[str] = ["zh", "en", "auto"]
    asr_cpu_threads: int = Field(0, ge=0)
    # Cross-job batching: a worker takes up to this many queued short clips and decodes their
    # speech segments together. 0 = by device (see `batch_jobs`); 1 = one job at a time.
    asr_batch_jobs: int = Field(0, ge=0, le=64)
    # Prep processes that decode and cut (FSMN-VAD) a pooled pass's clips while the ASR model
    # runs the previous wave (src/asr/prep.py). None = by device (see `prep_processes`); 0 = off.
    asr_prep_processes: int | None = Field(None, ge=0, le=64)
    # Clips longer than this (seconds) are never batched with others.
    asr_batch_max_audio_seconds: float = Field(60.0, gt=0)

    # Storage.
    storage_path: Path = Path("src/storage")
    max_recordings: PositiveInt = 10
    max_history_records: PositiveInt = 10
    max_upload_bytes: int = Field(100 * 1024**2, gt=0)

    # Queue.
    rq_queue_name: str = Field("asr-queue", min_length=1)
    rq_worker_count: PositiveInt = 2
    rq_worker_timeout: PositiveInt = 600
    # Priority lanes (src/queue/job_queue.py): RQ queues `<RQ_QUEUE_NAME>-high`, `<RQ_QUEUE_NAME>`
    # (normal) and `<RQ_QUEUE_NAME>-low`; workers always take the highest non-empty one. Without
    # submit's `priority`, audio shorter than LANE_HIGH_MAX_SECONDS goes high and audio of
    # LANE_LOW_MIN_SECONDS or more goes low. A job that waited LANE_PROMOTE_SECONDS in its lane
    # moves up one lane (so a low job is in the high lane after twice that): none starves.
    lane_high_max_seconds: float = Field(60.0, ge=0)
    lane_low_min_seconds: float = Field(600.0, gt=0)
    lane_promote_seconds: float = Field(300.0, gt=0)
    task_ttl_seconds: PositiveInt = 3600
    # Never transcribe the same thing twice (src/service/dedup.py). An upload whose bytes,
    # language, hotwords and models match a task done within this many seconds is answered from
    # its result at once (0: off). A hit reads the source task's record, so no result outlives
    # TASK_TTL_SECONDS either. Submit's Idempotency-Key header keeps its task this long (0: the
    # header is ignored).
    result_cache_seconds: int = Field(86400, ge=0)
    idempotency_seconds: int = Field(86400, ge=0)

    # Completion webhook (src/service/callbacks.py). Submit's `callback_url` is accepted only
    # with CALLBACK_SECRET set: every POST is signed with it (HMAC-SHA256). The SSRF guard refuses
    # link-local, metadata, multicast and unspecified addresses always, private ranges unless
    # CALLBACK_ALLOW_PRIVATE, loopback when CALLBACK_ALLOW_LOOPBACK is false. A failed delivery
    # is tried again after each of CALLBACK_RETRY_INTERVALS seconds in turn, then given up.
    callback_secret: SecretStr | None = None
    callback_allow_private: bool = False
    callback_allow_loopback: bool = True
    callback_timeout_seconds: float = Field(10.0, gt=0, le=120)
    callback_retry_intervals: list[PositiveInt] = [10, 30, 90, 270, 810]

    # HTTP.
    api_host: str = "0.0.0.0"
    api_port: int = Field(8000, ge=1, le=65535)
    api_reload: bool = False
    # Required on every route but health and docs when set (Authorization: Bearer or X-API-Key).
    api_key: SecretStr | None = None
    # Browser origins allowed by CORS; empty = CORS closed.
    cors_origins: list[str] = []
    # Slow clients (src/api/server.py, src/api/middleware.py): a request's headers must be in
    # within this many seconds; its body may pause at most API_BODY_TIMEOUT_SECONDS and must
    # average API_BODY_MIN_RATE bytes/s after that long (0: pauses only).
    api_header_timeout_seconds: float = Field(10.0, gt=0)
    api_body_timeout_seconds: float = Field(20.0, gt=0)
    api_body_min_rate: int = Field(500, ge=0)

    # The OpenAI-compatible face (/v1/audio/transcriptions). A request waits this long for its
    # task, then answers 504 with the task id (the task goes on); keep a proxy's read timeout
    # above it. `model` may be the configured ASR model's name or one of these aliases.
    openai_wait_seconds: float = Field(300.0, gt=0, le=3600)
    openai_model_aliases: list[str] = ["whisper-1"]

    # Logs.
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_rotation: str = "10 MB"
    log_retention: str = "30 days"

    @field_validator("asr_device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_RE.match(value):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[str]) -> list[str]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {address!r}")
        return value

    @field_validator("log_rotation")
    @classmethod
    def _check_rotation(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper() if isinstance(value, str) else value

    @field_validator("asr_model_path", "asr_hotwords_path", "storage_path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator(
        "api_key", "callback_secret", "worker_api_url", "redis_sentinel_password", mode="before"
    )
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("openai_model_aliases")
    @classmethod
    def _check_aliases(cls, value: list[str]) -> list[str]:
        bad = [alias for alias in value if not _MODEL_ALIAS_RE.match(alias)]
        if bad:
            raise ValueError(f"model aliases are 1-128 of letters, digits and ._:/- (got {bad})")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _check_languages(self) -> Settings:
        if not self.asr_languages:
            raise ValueError("ASR_LANGUAGES must name at least one language")
        return self

    @property
    def asr_model_name(self) -> str:
        """The ASR model as clients see it (/v1/models): its ModelScope id, or a local
        directory's own name, so the server's paths are not shown."""
        model = self.asr_model.rstrip("/")
        if model.startswith(("/", "~", ".")) or len(PurePath(model).parts) > 2:
            return PurePath(model).name
        return model

    @property
    def device(self) -> str:
        """The torch device the worker uses: explicit ASR_DEVICE, else ASR_USE_GPU decides."""
        if self.asr_device != "auto":
            return self.asr_device
        return "cuda" if self.asr_use_gpu else "cpu"

    @property
    def cpu_threads(self) -> int:
        """Torch threads per worker: ASR_CPU_THREADS, else the usable cores shared among workers.

        On a 2-core box two workers with 2 threads each ran at a CPU RTF of 1.1-1.5, with 1 each
        at 0.15-0.19 (report/PERFORMANCE.md): oversubscribed threads spin against each other.
        """
        if self.asr_cpu_threads:
            return self.asr_cpu_threads
        return max(1, usable_cores() // self.rq_worker_count)

    @property
    def batch_jobs(self) -> int:
        """Jobs per pooled pass: ASR_BATCH_JOBS, else what report/PERFORMANCE.md measured faster."""
        if self.asr_batch_jobs:
            return self.asr_batch_jobs
        return DEFAULT_BATCH_JOBS_GPU if self.device.startswith("cuda") else DEFAULT_BATCH_JOBS_CPU

    @property
    def prep_processes(self) -> int:
        """ASR_PREP_PROCESSES, else on CUDA the cores a worker may use less the one that feeds the
        GPU (at most 8), and none on the CPU: there the ASR model itself needs every core."""
        if self.asr_prep_processes is not None:
            return self.asr_prep_processes
        if not self.device.startswith("cuda"):
            return 0
        return min(8, max(1, usable_cores() // self.rq_worker_count - 1))

    @property
    def redis_dsn(self) -> str:
        if self.redis_url:
            return self.redis_url
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as the (host, port) pairs redis-py's Sentinel takes."""
        pairs = (address.rpartition(":") for address in self.redis_sentinels)
        return [(host.strip("[]"), int(port)) for host, _, port in pairs]

    @property
    def redis_display(self) -> str:
        """The Redis URL without its password, for logs."""
        if self.redis_sentinels:
            hosts = ",".join(self.redis_sentinels)
            return f"sentinel://{hosts}/{self.redis_sentinel_master}/{self.redis_db}"
        parts = urlsplit(self.redis_dsn)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def recordings_dir(self) -> Path:
        return self.storage_path / "recordings"

    @property
    def logs_dir(self) -> Path:
        return self.storage_path / "logs"

    @property
    def fetched_dir(self) -> Path:
        """Where a worker on another host keeps the recordings it downloaded, while it works."""
        return self.storage_path / "fetched"

    @property
    def history_file(self) -> Path:
        return self.logs_dir / "asr_history.jsonl"


class SettingsError(RuntimeError):
    """A setting is invalid; the message names the environment key."""


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per bad key (as env names)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = "_".join(str(part) for part in err["loc"][:1]).upper() or "settings"
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache
def get_settings() -> Settings:
    """Process-wide settings, read once; tests swap them via FastAPI dependency overrides."""
    return load_settings()
