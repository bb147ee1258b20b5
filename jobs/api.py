"""Python API for notebooks: the released tables as DataFrames, without writing anything.

>>> from jobs.api import release_dataframes
>>> result = release_dataframes("conf/demo.yaml", spark)      # doctest: +SKIP
>>> result.tables["persons_by_state_age_sex"].show()  # doctest: +SKIP  # safe: released table

Each call draws fresh noise and spends the spec's budget again: the API keeps no ledger, so
publish from one call only. Within a call, noise is keyed to the cells, so evaluating a returned
DataFrame several times shows the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from jobs.config import load_spec
from jobs.io import read_input
from jobs.runner import table_frames
from pipelines.plan import ReleasePlan, plan_release
from pipelines.release import Secrets
from pipelines.report import privacy_report
from pipelines.spec import ReleaseSpec
from pipelines.validation import validate_input


@dataclass(frozen=True)
class Release:
    tables: dict[str, DataFrame]
    plan: ReleasePlan
    privacy: dict[str, Any]
    """The manifest's privacy section: budget split, mechanisms, noise scales, intervals."""
    quarantined: DataFrame | None = None
    """Rows that failed validation under ``input.on_invalid: quarantine`` (private: not noised)."""


def release_dataframes(
    spec: ReleaseSpec | str | Path, spark: SparkSession, input_df: DataFrame | None = None
) -> Release:
    """Plan, check and compute every table of ``spec``; returns lazy DataFrames."""
    if not isinstance(spec, ReleaseSpec):
        spec = load_spec(spec)
    plan = plan_release(spec)
    df = input_df if input_df is not None else read_input(spark, spec.input)
    checked = validate_input(df, spec)
    secrets = Secrets.new()
    tables = {
        name: frame
        for t in plan.tables
        for name, frame in table_frames(spark, spec, t, checked.valid, secrets).items()
    }
    return Release(tables, plan, privacy_report(plan), checked.quarantined)
