"""src/logs.py: what a library prints at import goes to the DEBUG log, not to stdout."""

from __future__ import annotations

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
