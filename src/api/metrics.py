"""`GET /metrics` for Prometheus: the API's own HTTP figures, and the service's, read from Redis.

Two sources, one answer:
- HTTP requests are counted in this process, by route template and status, with a duration
  histogram (`HttpMetrics`, fed by the pure-ASGI `HttpMetricsMiddleware`). They are per API
  process: under `uvicorn --workers N` each process counts the requests it served and a scrape
  reaches whichever process accepts it, so run one process per port and scrape each
  (report/LOCAL_DEPLOYMENT_GUIDE.md, "Metrics").
- Everything the workers do (jobs, waits, failures, RTF, batches) is counted in Redis by the
  workers themselves (src/results/metrics.py) and read at scrape time with the queue and the
  workers' beacons (src/service/monitoring.py), so it is right across processes and hosts.

When Redis is unreachable the answer is still 200: the HTTP figures and `asr_redis_connected 0`,
which an alert can watch, instead of a failed scrape that hides why.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import iter_route_contexts
from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from rq import Queue
from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.dependencies import LanesDep, RedisDep, require_api_key
from src.records.redis_client import REDIS_ERRORS
from src.service import monitoring
from src.service.monitoring import ServiceFigures

# Up to two minutes: an upload on a slow link, or a request that waits for its transcript.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The route label of a request no route matched (404s): one value, however many paths are tried.
UNMATCHED = "unmatched"
# Methods kept as labels; any other a client invents counts as "other", so labels stay bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# `asr:stats` fields published as counters: (metric name less `_total`, help).
STATS_COUNTERS = {
    "submitted": ("asr_tasks_submitted", "Tasks accepted by submit"),
    "done": ("asr_jobs_done", "Jobs that finished with a transcript"),
    "audio_seconds": ("asr_audio_seconds", "Seconds of audio in finished jobs"),
    "processing_seconds": (
        "asr_engine_seconds",
        "Engine seconds spent on finished jobs (over asr_audio_seconds: the mean RTF)",
    ),
    "history_write_errors": (
        "asr_history_write_errors",
        "Finished jobs whose JSONL history line could not be written",
    ),
}


@dataclass(frozen=True)
class _RoutePattern:
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    template: str


class RouteTemplates:
    """The template a request's path matches (`/api/v1/asr/result/{task_id}`), so that a label
    has one value per route however many task ids clients send. Matched against the app's
    routes, so requests answered before routing (a 413 from the body guard) get theirs too."""

    def __init__(self) -> None:
        self._patterns: list[_RoutePattern] | None = None

    def of(self, scope: Scope) -> str:
        if self._patterns is None:  # the routes are all there once requests arrive
            self._patterns = _patterns(scope["app"])
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        partial = None
        for pattern in self._patterns:
            if pattern.regex.match(path):
                if pattern.methods is None or scope["method"] in pattern.methods:
                    return pattern.template
                partial = partial or pattern.template  # a 405: the path is a route's
        return partial or UNMATCHED


def _patterns(app: FastAPI) -> list[_RoutePattern]:
    patterns = []
    for context in iter_route_contexts(app.routes):
        path = context.path
        if path is None:
            continue
        if isinstance(context.original_route, Mount):
            regex, template, _ = compile_path(path.rstrip("/") + "/{path:path}")
        else:
            regex, template, _ = compile_path(path)
        methods = getattr(context.original_route, "methods", None)
        patterns.append(_RoutePattern(regex, frozenset(methods) if methods else None, template))
    return patterns


class HttpMetrics:
    """This API process's request counters, in a registry of its own (no process globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.routes = RouteTemplates()
        self.requests = Counter(
            "asr_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "asr_http_request_duration_seconds",
            "Seconds from a request's start to the end of its answer, by method and route template",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def observe(self, route: str, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


class HttpMetricsMiddleware:
    """Counts every HTTP answer, including those middleware gives before the app (413, 408)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Before the app runs: routing rewrites the scope (a Mount moves its prefix to root_path).
        route = self.metrics.routes.of(scope)
        status = 500  # what the client gets if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(route, scope, status, time.perf_counter() - started)


class ServiceCollector:
    """A prometheus_client collector that reads the service's figures from Redis when scraped."""

    def __init__(self, conn: redis.Redis, lanes: dict[str, Queue]) -> None:
        self.conn = conn
        self.lanes = lanes

    def collect(self) -> Iterator[Metric]:
        try:
            figures = monitoring.read(self.conn, self.lanes)
        except REDIS_ERRORS as exc:
            logger.warning(f"/metrics: Redis unreachable ({type(exc).__name__})")
            yield _redis_connected(False)
            return
        yield _redis_connected(True)
        yield from families(figures)


def _redis_connected(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "asr_redis_connected", "1 if the API read Redis for this scrape, else 0", value=int(up)
    )


def families(figures: ServiceFigures) -> Iterator[Metric]:
    """The service's figures as Prometheus metric families."""
    depth = GaugeMetricFamily("asr_queue_depth", "Jobs waiting in the queue", labels=["lane"])
    oldest = GaugeMetricFamily(
        "asr_queue_oldest_age_seconds",
        "Seconds the job at the head of the queue has waited (0 when empty)",
        labels=["lane"],
    )
    for lane, figure in figures.lanes.items():
        depth.add_metric([lane], figure.depth)
        oldest.add_metric([lane], round(figure.oldest_age, 3))
    yield depth
    yield oldest
    yield GaugeMetricFamily(
        "asr_workers_ready", "Workers with their model loaded", value=len(figures.workers)
    )
    yield GaugeMetricFamily(
        "asr_workers_busy",
        "Ready workers running a job (from their beacons: up to 5 s old)",
        value=sum(1 for worker in figures.workers if worker.busy),
    )
    load = GaugeMetricFamily(
        "asr_worker_model_load_seconds",
        "Seconds each ready worker took to load its model",
        labels=["worker", "device"],
    )
    for worker in figures.workers:
        load.add_metric([worker.name, worker.device], worker.model_load_seconds)
    yield load
    for field, (name, help_text) in STATS_COUNTERS.items():
        yield CounterMetricFamily(name, help_text, value=figures.counters.get(field, 0.0))
    failures = CounterMetricFamily(
        "asr_job_failures", "Jobs that failed, by reason", labels=["reason"]
    )
    for reason, count in figures.failures.items():
        failures.add_metric([reason], count)
    yield failures
    for spec, values in figures.histograms:
        buckets = [(_le(bound), count) for bound, count in values.buckets]
        yield HistogramMetricFamily(
            f"asr_{spec.name}", spec.help, buckets=buckets, sum_value=values.sum
        )


def _le(bound: float) -> str:
    """A bucket bound as Prometheus' clients write it: 1.0, 0.005, +Inf."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


router = APIRouter(tags=["system"], dependencies=[Depends(require_api_key)])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, conn: RedisDep, lanes: LanesDep) -> Response:
    """Prometheus exposition (OpenMetrics when the scraper asks for it); a sync endpoint, so
    the Redis reads run in the thread pool."""
    scrape = CollectorRegistry()
    scrape.register(request.app.state.http_metrics.registry)
    scrape.register(ServiceCollector(conn, {p.value: q for p, q in lanes.queues.items()}))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(scrape), media_type=content_type)


def install(app: FastAPI) -> None:
    """Count every request (outermost middleware: call after the others are added) and serve
    `/metrics`, behind API_KEY when one is set."""
    app.state.http_metrics = HttpMetrics()
    app.include_router(router)
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.http_metrics)
