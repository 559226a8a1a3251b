"""What a worker process hands its jobs: settings, the loaded engine, its name, batch state.

The worker (src/worker/process.py) builds one `WorkerContext` at start and the RQ job functions
(src/worker/jobs.py) read it with `current()`. Both import this module and neither imports the
other, so the settings given to `main()` are the settings the jobs run with.

How the jobs get it: RQ calls a job function by its dotted path with the job's own arguments
only, and exposes no "current worker". So `ASRWorker.work()` binds its context in a
`ContextVar` for as long as it serves jobs (`bound`), and resets it when it stops. That is not
process state the way a module global is: it holds a value only inside the worker loop that set
it, is invisible to other threads (the readiness beat, a second worker in a test), and is gone
when the loop returns. It covers the jobs and their failure callbacks, including the ones RQ
runs for abandoned jobs while it cleans its registries inside the same loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from src.config import Settings
from src.engine.interface import Engine, EngineOutput


class NoWorkerContextError(RuntimeError):
    """A job ran outside `python -m src.worker`, e.g. under a plain `rq worker`."""


class BatchResults:
    """Results a pooled pass made for jobs this worker claimed but has not run yet.

    The job that ran the pass (src/worker/jobs.py) leaves them here; each claimed job then runs
    as a normal RQ job, so registries, callbacks and history stay per job, and publishes its
    result instead of recomputing it. A job missing here is processed on its own.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, EngineOutput] = {}
        self.started: set[str] = set()

    def take(self, task_id: str) -> EngineOutput | None:
        return self.outputs.pop(task_id, None)

    def clear(self) -> None:
        self.outputs.clear()
        self.started.clear()


@dataclass
class WorkerContext:
    """One worker process's settings, its engine (loaded once, by `main`), its name, and the
    results of the batch it is working through."""

    settings: Settings
    engine: Engine
    name: str
    batch: BatchResults = field(default_factory=BatchResults)


_current: ContextVar[WorkerContext] = ContextVar("asr_worker_context")


@contextmanager
def bound(context: WorkerContext) -> Iterator[WorkerContext]:
    """Make `context` the one `current()` returns until the block ends."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current() -> WorkerContext:
    """The context of the worker running this job.

    No lazy fallback: building one here would load a second model per process and read the
    environment's settings instead of the ones the worker was given.
    """
    try:
        return _current.get()
    except LookupError:
        raise NoWorkerContextError(
            "no worker context: jobs run in `python -m src.worker` (which loads the engine"
            " once and binds its settings), not in a plain `rq worker`"
        ) from None


def bound_or_none() -> WorkerContext | None:
    """The worker's context if one is bound; for code that must also run without one."""
    return _current.get(None)
