"""Figures the fault tests measure, for report/RELIABILITY.md."""

from __future__ import annotations

import json
import os
from typing import Any


def record(fault: str, **figures: Any) -> None:
    """Append one JSON line to $RELIABILITY_LOG when it is set; do nothing otherwise."""
    path = os.environ.get("RELIABILITY_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"fault": fault, **figures}) + "\n")
