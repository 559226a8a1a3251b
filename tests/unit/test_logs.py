"""src/logs.py: what a library prints at import goes to the DEBUG log, not to stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.logs import quiet_import


def test_a_notice_printed_at_import_becomes_a_debug_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    log_lines: list[str],
):
    (tmp_path / "noisy_lib.py").write_text(
        'print("Notice: ffmpeg is not installed.\\n\\tsudo apt install ffmpeg")\nVALUE = 42\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "noisy_lib", raising=False)

    module = quiet_import("noisy_lib")

    assert module.VALUE == 42
    assert capsys.readouterr().out == ""
    assert log_lines == [
        "DEBUG noisy_lib printed at import: Notice: ffmpeg is not installed.",
        "DEBUG noisy_lib printed at import: sudo apt install ffmpeg",
    ]


SIGNAL_DURING_A_LOG_LINE = """
import logging, os, signal, sys
from pathlib import Path
from loguru import logger
from src.config import Settings
from src.logs import setup_logging

setup_logging(Settings(storage_path=Path(sys.argv[1])), "script")
# What RQ does on SIGTERM: its handler logs through the stdlib logger.
signal.signal(signal.SIGUSR1, lambda *_: logging.getLogger("rq.worker").warning("stop requested"))

def slow_sink(message):
    if "being written" in message:
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs inside this call: inside loguru
        sum(range(1000))

logger.add(slow_sink, level="INFO")
logger.info("a line being written when the signal comes")
logger.info("the next line")
"""


def test_a_line_logged_by_a_signal_handler_during_another_line_is_kept(tmp_path: Path):
    """A worker's SIGTERM came while it was writing a line: loguru refused the handler's line
    ("deadlock avoided") and printed a traceback. The line is written after, not refused."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_DURING_A_LOG_LINE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    err = done.stderr
    assert "Traceback" not in err and "Logging error" not in err, err
    lines = sorted(line.split("] ", 1)[1] for line in err.splitlines())
    assert lines == [
        "INFO a line being written when the signal comes",
        "INFO the next line",
        "WARNING stop requested",
    ], err
