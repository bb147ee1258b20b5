"""``dprelease analyze``: the non-private analysis of a spec's input (pipelines.analysis),
written to the output's owner-only private directory, never to a release.

NOT privacy-protected. Nothing is charged to a ledger and no release is written. The command
prints only where the analysis is: its figures are exact statistics of the data and stay in
``<output>/.private/analysis/``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from jobs import writer
from jobs.io import read_input
from jobs.progress import stage
from jobs.storage import join, open_store
from pipelines.analysis import NOT_PRIVATE, analyze_table
from pipelines.persistence import keep, release_scope
from pipelines.preview import preview
from pipelines.spec import ReleaseSpec
from pipelines.validation import validate_input

log = logging.getLogger("dprelease")


def run_analysis(spark: SparkSession, spec: ReleaseSpec) -> str:
    """Analyze the input of every table of ``spec``; return the path of the analysis (JSON)."""
    preview(spec)  # a spec run would refuse is refused here too, before any data is read
    store = open_store(spec.output.path, spark)
    started = time.monotonic()
    tables: list[dict[str, Any]] = []
    with release_scope():
        with stage("read and validate input", spark):
            checked = validate_input(read_input(spark, spec.input), spec)
            valid = keep(checked.valid)
        for i, t in enumerate(spec.tables):
            with stage(f"table {t.name}: analyze contributions and bounds", spark):
                tables.append(analyze_table(valid, spec, i))
    at = dt.datetime.now(dt.timezone.utc)
    document = {
        "privacy": NOT_PRIVATE,
        "created_at": at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 3),
        "valid_rows_only": "rows failing the input's expectations are left out, as run leaves "
        "them out",
        "tables": tables,
    }
    root = join(writer.private_dir(store, spec.output.path), "analysis")
    store.mkdirs(root, private=True)
    path = join(root, f"{at.strftime('%Y%m%dT%H%M%SZ')}.json")
    store.replace(path, json.dumps(document, indent=2).encode("utf-8"), private=True)
    log.info("analysis written to %s", path)
    return path
