"""Machine-level test prerequisites that .ci/run installs with apt-get."""

from __future__ import annotations

import os
import shutil

import pytest


def need(command: str, package: str) -> str:
    """The command's path; missing, a failure in CI (which installs it) and a skip elsewhere."""
    path = shutil.which(command)
    if path is None:
        reason = f"needs {command} (apt-get install {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path
