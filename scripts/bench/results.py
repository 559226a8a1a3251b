"""The benchmark's results as typed models: what each figure measures, and performance.json.

Every figure module returns one of these; run.py assembles a `Result`, report.py judges it against
the targets and renders PERFORMANCE.md from it. `extra="allow"` keeps keys this version does not
know (an older or newer performance.json) through `--render` and `--merge`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import quantiles
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Stats(Model):
    """n, mean, p50, p95, p99, min, max of one quantity (None where there are no values)."""

    n: int = 0
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float], scale: float = 1.0, digits: int = 1) -> Stats:
        """The summary of `values` times `scale` (1000: s to ms); percentiles interpolated."""
        if not values:
            return cls()
        q = quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
        raw = (sum(values) / len(values), q[49], q[94], q[98], min(values), max(values))
        names = ("mean", "p50", "p95", "p99", "min", "max")
        return cls(
            n=len(values), **{k: round(v * scale, digits) for k, v in zip(names, raw, strict=True)}
        )


class Cpu(Model):
    """Cores this run's processes and everybody else's used while a phase ran (a shared box)."""

    wall_s: float
    own_cores: float
    foreign_cores: float


class Phase(Model):
    """A timed phase: other people's load just before it and while it ran."""

    background_cores_before: float | None = None
    cpu: Cpu | None = None


class Clip(Model):
    file: str
    seconds: float
    bytes: int | None = None
    codec: str | None = None


class SubmitLevel(Phase):
    concurrency: int
    requests: int
    errors: int
    error_samples: list[str]
    wall_s: float
    requests_per_s: float
    latency_ms: Stats  # client-observed
    server_ms: Stats  # the API's own time, from its access log
    p50_first_fifth_ms: float | None
    p50_last_fifth_ms: float | None


class RetentionScan(Model):
    recordings_indexed: int
    ms_per_call: float
    redis_keys: int
    ready_workers_scan_ms: float


class UploadCheck(Model):
    submit_runs: str  # which check src/service's submit path calls: verify or decode
    probe_ms: float
    full_decode_ms: float
    codec_only_decode_ms: float
    verify_ms: float | None = None


class SubmitFigure(Model):
    upload_check: UploadCheck
    clip: Clip
    workers_running: int = 0
    levels: list[SubmitLevel]
    retention_scan: list[RetentionScan]
    api_rss_mb_after: float | None

    @property
    def alone(self) -> SubmitLevel:
        return min(self.levels, key=lambda r: r.concurrency)

    @property
    def top(self) -> SubmitLevel:
        return max(self.levels, key=lambda r: r.concurrency)


# The open-loop figure's bar: a voice note answered within this at the 99th percentile.
P99_TARGET_MS = 50.0


class RateLevel(Phase):
    rate_per_s: float  # offered
    seconds: float
    sent: int
    answered: int  # 200s
    errors: int
    error_samples: list[str]
    achieved_per_s: float  # 200s per second of the level
    latency_ms: Stats  # from the scheduled send time
    server_ms: Stats  # the API's own time, from its access log
    client_lag_ms: Stats  # how late the load generator itself sent (its share of latency_ms)
    api_cpu_ms_per_submit: float
    redis_cpu_ms_per_submit: float
    client_cpu_ms_per_submit: float  # the load generator itself, on the same 2 cores

    @property
    def p99(self) -> float:
        return self.latency_ms.p99 if self.latency_ms.p99 is not None else float("inf")


class OpenLoopRun(Model):
    workers_busy: int  # worker processes transcribing the arrivals meanwhile
    api_processes: int
    levels: list[RateLevel]

    @property
    def best(self) -> RateLevel | None:
        """The highest rate whose p99 stayed within the target, with no errors."""
        fine = [lv for lv in self.levels if lv.errors == 0 and lv.p99 <= P99_TARGET_MS]
        return max(fine, key=lambda lv: lv.rate_per_s, default=None)


class OpenLoopFigure(Model):
    clip: Clip
    p99_target_ms: float = P99_TARGET_MS
    runs: list[OpenLoopRun]


class PeerSide(Phase):
    """One server under the burst."""

    name: str
    clips: int
    done: int
    errors: int
    error_samples: list[str]
    warmup_s: float
    wall_s_all_done: float | None  # first send to last transcript
    transcript_ms: Stats  # send -> transcript, per clip
    health_ms: Stats  # the separate health poller's latencies while the burst ran
    health_errors: int
    rss_mb: dict[str, float | None]  # peak (VmHWM) per server process
    rss_mb_total: float
    cpu_s: float  # CPU seconds of the server processes during the burst
    text_sample: str | None


# The work funasr-server does per clip: "same" is ours (FSMN-VAD + ASR + CT punctuation, the
# same model dirs); "asr-only" is funasr-server as it ships with --model-path (the ASR model alone).
PeerPipeline = Literal["same", "asr-only"]
PeerRuns = Literal["same", "asr-only", "both"]  # "both": the same pipeline (judged), then ASR only


class PeerFigure(Model):
    clips: int
    lengths_s: dict[str, int]  # min, max, sum, seed
    workers: int = 2  # ours: worker processes (every run before this field had 2)
    threads_per_process: int  # ours: ASR_CPU_THREADS
    peer_threads: int  # funasr-server's torch threads (FunASR's default ncpu is 4)
    health_interval_ms: float
    # The work `peer` did; the default is what every run before this field measured.
    peer_pipeline: PeerPipeline = "asr-only"
    ours: PeerSide
    peer: PeerSide  # the one the ratio target is judged on
    ratio_all_done: float | None  # peer / ours: above 1, ours transcribes the burst sooner
    # funasr-server as it ships with --model-path, on the same burst, beside a same-pipeline peer
    peer_asr_only: PeerSide | None = None
    ratio_all_done_asr_only: float | None = None
    notes: list[str]


class OverheadFigure(Phase):
    clip: Clip
    jobs: int
    poll_interval_ms: float
    server_overhead_ms: Stats
    client_overhead_ms: Stats
    parts_ms: dict[str, Stats]
    processing_ms: Stats


class PathRun(Phase):
    """The same clips through one path: the service (N workers) or the direct loop."""

    workers: int | None = None
    clips: int
    audio_s: float
    wall_s: float
    clips_per_s: float
    audio_s_per_s: float
    engine_s_sum: float
    process_cpu_s: dict[str, float]  # CPU seconds per role: workers, api, redis; or direct


class Round(Model):
    service: PathRun
    direct: PathRun


class ThroughputFigure(Model):
    rounds: list[Round]
    service_1_worker: PathRun
    direct_loop: PathRun
    ratio_1_worker: float
    ratio_per_round: list[float]
    cpu_s_per_clip: dict[str, float]
    cpu_ratio_1_worker: float | None  # direct / worker CPU per clip: immune to other load
    clip_lengths_s: list[int]
    threads_per_process: int
    service_n_workers: PathRun | None = None  # all workers at once (scaling)
    ratio_n_workers: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Runs before these models wrote `service_2_workers` and `ratio_2_workers`."""
        if isinstance(data, dict):
            data = dict(data)
            for key in [k for k in data if re.fullmatch(r"(service|ratio)_[2-9]\d*_workers", k)]:
                data[key.split("_", 1)[0] + "_n_workers"] = data.pop(key)
        return data


class EngineRow(Model):
    """One clip length and batch_size_s: RTF and the best run's stage split."""

    clip_s: int
    batch_size_s: int
    reps: int
    rtf_best: float
    rtf_median: float
    wall_s_all: list[float]
    cpu_s_best: float
    decode_s: float | None
    vad_s: float | None
    asr_s: float
    post_asr_s: float
    chars_per_audio_s: float
    segments: int
    sentences: int | None = None


class EngineModel(Model):
    size: str
    random_weights: bool
    asr_params_m: float
    asr_model_pt_mb: float
    asr_dir: str


class EngineFigure(Phase):
    device: str
    device_name: str
    torch_threads: int
    model: EngineModel
    load_s: float
    process_rss_mb_after_load: float | None
    gpu_mb_after_load: float | None = None
    gpu_peak_allocated_mb: float | None = None
    gpu_reserved_mb: float | None = None
    rss_mb_before_trim: float | None = None
    rss_mb_after_trim: float | None = None
    warmup_s: float | None
    rows: list[EngineRow]

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


class BatchRow(Model):
    jobs: int
    wave: int = 0  # jobs per ASR wave when prep processes prepare the pass; 0: one wave
    prep_processes: int = 0
    wall_s_all: list[float]
    wall_s_best: float
    clips_per_s: float
    rtf: float
    speedup: float  # against one by one
    identical: int  # same text and sentence times as one by one
    same_text: int

    @property
    def label(self) -> str:
        return f"{self.jobs} jobs in waves of {self.wave}" if self.wave else f"{self.jobs} jobs"


class BatchingFigure(Phase):
    size: str
    device: str
    device_name: str
    torch_threads: int
    asr_params_m: float
    clip_lengths_s: list[int]
    audio_s: float
    rounds: int
    rows: list[BatchRow]
    gpu_peak_allocated_mb: float | None = None
    prep_rss_mb: float | None = None  # the prep processes together, at the end

    @property
    def faster_jobs(self) -> list[str]:
        """Modes whose every round beat every one-by-one round: a gain, not the noise."""
        one = min(self.rows[0].wall_s_all)
        return [r.label for r in self.rows[1:] if max(r.wall_s_all) < one]

    @property
    def pipelined(self) -> BatchRow | None:
        """The fastest pipelined mode (prep processes), if the run had one."""
        rows = [r for r in self.rows if r.wave]
        return min(rows, key=lambda r: r.wall_s_best) if rows else None


class RedisMemory(Model):
    used_memory_mb: float
    used_memory_peak_mb: float
    used_memory_rss_mb: float
    keys: int


class RssSample(Model):
    jobs: int
    rss_mb: float | None


class LeakCheck(Phase):
    worker: str
    jobs: int
    clip: Clip
    rss_before_mb: float
    rss_after_mb: float
    growth_mb: float
    growth_pct: float
    second_half_growth_mb: float
    hwm_mb: float | None
    samples: list[RssSample]


class MemoryFigure(Model):
    """Filled in as the run goes: each phase leaves the API's and Redis's memory after it."""

    api_rss_mb_idle: float | None = None
    redis_start: RedisMemory | None = None
    api_rss_mb_after_submit: float | None = None
    worker_rss_mb_after_load: dict[str, float | None] = {}
    worker_ready_s: dict[str, float] = {}
    direct_process_rss_mb_after_load: float | None = None
    child_import_s: float | None = None
    redis_after_burst: RedisMemory | None = None
    api_rss_mb_after_burst: float | None = None
    leak_check: LeakCheck | None = None
    api_rss_mb_end: float | None = None
    api_hwm_mb: float | None = None
    redis_end: RedisMemory | None = None


class BurstFigure(Phase):
    clips: int
    lengths_s: dict[str, int]  # min, max, sum, seed
    workers: int
    accepted: int
    rejected: int
    rejected_samples: list[str]
    done: int
    failed: int
    failed_samples: list[str]
    all_submitted_s: float
    all_done_s: float | None
    queue_wait_s: Stats
    submit_latency_ms: Stats
    engine_s_sum: float
    jobs_per_worker: dict[str, int]
    redis_used_memory_mb_after: float


class Figures(Model):
    submit: SubmitFigure | None = None
    openloop: OpenLoopFigure | None = None
    peer: PeerFigure | None = None
    overhead: OverheadFigure | None = None
    throughput: ThroughputFigure | None = None
    engine: EngineFigure | None = None
    batching: dict[str, BatchingFigure] | None = None
    memory: MemoryFigure | None = None
    burst: BurstFigure | None = None

    @model_serializer(mode="wrap")
    def _measured_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class Config(Model):
    """Sizes of one run; the defaults are the full run on a CPU box (run.py: GPU, SMOKE)."""

    mode: str = "full"
    submit_levels: list[tuple[int, int]] = [(1, 50), (10, 20), (100, 3)]  # (clients, each)
    openloop_rates: list[float] = [50, 100, 150, 200, 250, 300]  # voice notes per second
    openloop_seconds: float = 10.0  # per rate
    peer_clips: int = 100  # the burst both this service and funasr-server get
    peer_pipeline: PeerRuns = "both"  # funasr-server's work, each way against one burst of ours
    overhead_jobs: int = 30
    throughput_clips: int = 24
    throughput_rounds: int = 2
    burst_clips: int = 100
    burst_range: tuple[int, int] = (5, 30)
    leak_jobs: int = 200
    workers: int = 2
    threads: int = 1
    engine_size: str = "full"
    engine_clips: list[int] = [10, 60]
    engine_batches: list[int] = [60, 300, 500]
    engine_reps: int = 2
    engine_reps_long: int = 2  # for clips over 30 s
    batching_models: list[str] = ["full", "tiny"]
    batching_clips: int = 12
    batching_sizes: list[int] = [4, 8]
    batching_rounds: int = 2
    # Pipelined rows: passes of PIPELINE_WAVES waves of each size, with this many prep processes.
    batching_waves: list[int] = [4]
    batching_prep_processes: int = 1
    quiet_s: float = 60.0
    seeds: dict[str, int] = {"throughput": 3, "burst": 5, "batching": 7, "openloop": 11}


class RunInfo(Model):
    """Date, machine, versions, commit and how the run was started: every report's header."""

    date: str
    host: str
    machine: dict[str, Any]  # cpus, cpu_model, memory_gb, kernel, os, load averages
    versions: dict[str, str | None]
    git: dict[str, Any]  # commit, branch, dirty, modified_files
    mode: str
    command: str
    figures: list[str]
    config: dict[str, Any]
    duration_s: float | None = None


class Extra(Model):
    """A partial run merged in (`--merge`), e.g. the engine figure from a GPU box."""

    run: RunInfo
    figure: EngineFigure | dict[str, BatchingFigure]


class Target(Model):
    name: str
    target: str
    measured: str
    verdict: str  # pass, MISS or n/a
    gap: str = ""
    why: str = ""


class Result(Model):
    schema_: int = Field(1, alias="schema")
    run: RunInfo
    figures: Figures
    extra: dict[str, Extra] = {}
    targets: list[Target] = []
