"""Loguru setup: the design's three files plus stderr, and stdlib logging (RQ, FunASR) routed in.

asr_api.log holds the API's access lines and asr_error.log its errors with tracebacks. Each
worker process writes files of its own, asr_worker.<name>.log (DEBUG and up) and
asr_error.<name>.log: loguru rotates a file by renaming it, and a second process writing the same
file would go on writing into the renamed one (`tail -f` would miss it), so no two processes
share a rotated file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sys
import threading
from pathlib import Path
from types import FrameType, ModuleType
from typing import Literal, TypedDict

from loguru import logger

from src.config import Settings

LOG_FORMAT = "[{time:YYYY-MM-DD HH:mm:ss}] {level} {message}"
Role = Literal["api", "worker", "script"]
_LOGURU_HANDLER = str(Path("loguru", "_handler.py"))


class _FileSinkOptions(TypedDict):
    """What every log file shares: spelled out so that loguru's typed `add` can check it."""

    format: str
    rotation: str
    retention: str
    encoding: str
    enqueue: bool


class _InterceptHandler(logging.Handler):
    """Send records of stdlib loggers (RQ, uvicorn, FunASR) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        if _inside_loguru():
            # A signal handler (RQ's, on SIGTERM) interrupted this thread while loguru was writing
            # a line. Its sinks are not re-entrant: they would refuse this line and print a
            # traceback. A thread writes it as soon as the interrupted line is done.
            log = logger.opt(exception=record.exc_info).log
            threading.Thread(target=log, args=(level, record.getMessage())).start()
            return
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def _inside_loguru() -> bool:
    """Whether this thread's stack already holds a loguru sink call."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.endswith(_LOGURU_HANDLER):
            return True
        frame = frame.f_back
    return False


def setup_logging(settings: Settings, role: Role, name: str = "") -> None:
    """Configure sinks for one process (a worker passes its name); safe to call again."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    try:
        logger.remove()
    except OSError as exc:  # a full disk must not stop a restart; the old sinks are gone anyway
        sys.stderr.write(f"could not flush the previous log files: {exc}\n")
    common: _FileSinkOptions = {
        "format": LOG_FORMAT,
        "rotation": settings.log_rotation,
        "retention": settings.log_retention,
        "encoding": "utf-8",
        "enqueue": True,
    }
    logger.add(sys.stderr, level=settings.log_level, format=LOG_FORMAT, backtrace=False)
    if role == "api":
        logger.add(settings.logs_dir / "asr_api.log", level="INFO", **common)
    suffix = f".{name}" if role == "worker" and name else ""
    if role == "worker":
        logger.add(settings.logs_dir / f"asr_worker{suffix}.log", level="DEBUG", **common)
    logger.add(
        settings.logs_dir / f"asr_error{suffix}.log",
        level="ERROR",
        backtrace=True,
        diagnose=False,  # no local variables in the log: they may hold audio or secrets
        **common,
    )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)
    for name in ("rq.worker", "rq", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
    # uvicorn's own access log is replaced by the API's access middleware.
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("uvicorn.access").propagate = False


def quiet_import(name: str) -> ModuleType:
    """Import a module, sending what it prints to stdout meanwhile to the DEBUG log.

    Some libraries print notices when imported (FunASR: src/asr/funasr_import.py); in a service
    they land in the operator's log unformatted and without a level.
    """
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module = importlib.import_module(name)
    for line in printed.getvalue().splitlines():
        if line.strip():
            logger.debug(f"{name} printed at import: {line.strip()}")
    return module
