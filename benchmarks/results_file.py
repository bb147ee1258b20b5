"""What the benchmarks print, and where they keep it: ``benchmarks/results/<kind>-<time>.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(kind: str, payload: Any) -> Path:
    """Write ``payload`` as JSON under ``benchmarks/results/`` and return the file's path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print ``rows`` as aligned columns, each ``(header, key, format)`` such as ``("rows", "rows",
    ">12,")``; a missing or None value prints as ``-``."""
    print(" ".join(f"{header:{fmt.rstrip(',')}}" for header, _, fmt in columns))
    for r in rows:
        cells = [
            f"{r[key]:{fmt}}" if r.get(key) is not None else f"{'-':{fmt.rstrip(',')}}"
            for _, key, fmt in columns
        ]
        print(" ".join(cells))
