"""Where the benchmarks keep what they printed: ``benchmarks/results/<kind>-<timestamp>.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(kind: str, payload: Any) -> Path:
    """Write ``payload`` as JSON under ``benchmarks/results/`` and return the file's path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path
