"""Python API for notebooks: the released tables as DataFrames, without writing anything.

>>> from jobs.api import release_dataframes
>>> result = release_dataframes("conf/demo.yaml", spark)      # doctest: +SKIP
>>> result.tables["persons_by_state_age_sex"].show()  # doctest: +SKIP  # safe: released table

Each call draws fresh noise and spends the spec's budget again. When the spec names a ledger
(``ledger:`` or the ``ledger`` argument), every call is charged to it under its own release id
before any noise is drawn, and recorded as handed to Python (the ledger's location
``python-api``). The ledger's rules are those of ``dprelease run``
(:meth:`jobs.ledger.Ledger.admit`): an id charged for another spec or published elsewhere is
refused, and so is a second call with an id this API has handed out, since it has no release to
return without a second draw. Without a ledger nothing is recorded, so publish from one call
only. Within a call, noise is keyed to the cells, so evaluating a
returned DataFrame several times shows the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from dp_ops.errors import BudgetError, SpecError
from jobs import release_id as release_ids
from jobs.config import load_spec, spec_hash
from jobs.io import read_input
from jobs.ledger import API_LOCATION, Admission, Attempt, open_ledger
from jobs.pyfiles import ship_to_connect
from jobs.runner import planned, public_keys, table_frames
from pipelines.auto_bounds import resolve as resolve_bounds
from pipelines.plan import ReleasePlan, declared_cell_count
from pipelines.release import Secrets
from pipelines.report import privacy_report
from pipelines.spec import LedgerSpec, ReleaseSpec
from pipelines.validation import validate_input


@dataclass(frozen=True)
class Release:
    tables: dict[str, DataFrame]
    plan: ReleasePlan
    privacy: dict[str, Any]
    """The manifest's privacy section: budget split, mechanisms, noise scales, intervals."""
    quarantined: DataFrame | None = None
    """Rows that failed validation under ``input.on_invalid: quarantine`` (private: not noised)."""
    release_id: str | None = None
    """The id this call was charged under in the ledger; None without a ledger."""


def release_dataframes(
    spec: ReleaseSpec | str | Path,
    spark: SparkSession,
    input_df: DataFrame | None = None,
    release_id: str | None = None,
    ledger: str | Path | None = None,
) -> Release:
    """Plan, check and compute every table of ``spec``; returns the released DataFrames (the
    noise is drawn in this call; evaluating a frame again shows the same values).

    ``ledger`` (a path) overrides the path of the spec's ``ledger:`` section, which names the
    dataset. With a ledger, the call is charged the spec's whole budget under ``release_id`` (a
    new id by default) after validation and before noise; BudgetError if it does not fit or if
    that id was charged before.
    """
    if not isinstance(spec, ReleaseSpec):
        spec = load_spec(spec)
    if spec.series is not None:
        raise SpecError(
            f"the spec is the series {spec.series.name!r}, whose tree is kept with its output "
            "between periods: release a period with jobs.runner.run_release(spark, spec, "
            f"{spec.series.release_id(spec.series.start)!r}) or dprelease run --period"
        )
    if ledger is not None:
        if spec.ledger is None:
            raise BudgetError("ledger: the spec has no ledger section naming the dataset to charge")
        spec = replace(spec, ledger=LedgerSpec(dataset=spec.ledger.dataset, path=str(ledger)))
    if release_id is not None:
        release_ids.check(release_id)
    plan = planned(spec)
    account = spec.ledger
    rid = (release_id or release_ids.new()) if account is not None else None
    attempt = Attempt(rid, spec_hash(spec), API_LOCATION) if rid is not None else None
    # refused before reading any data, charged before any noise is drawn
    if account and attempt:
        _refuse_handed_out(
            open_ledger(account.path).admit(account.dataset, attempt, plan.cost), attempt
        )
    df = input_df if input_df is not None else read_input(spark, spec.input)
    checked = validate_input(df, spec)
    if account and attempt:
        ledger = open_ledger(account.path)
        _refuse_handed_out(ledger.charge(account.dataset, attempt, plan.cost), attempt)
        ledger.commit(account.dataset, attempt)  # the frames below are the release
    ship_to_connect(spark)  # the workers of a Connect server run our code
    secrets = Secrets.new()
    tables: dict[str, DataFrame] = {}
    resolved = []
    for t in plan.tables:
        cells = declared_cell_count(spec, t.table)
        t = resolve_bounds(checked.valid, t, spec.input.privacy_unit, secrets, cells)  # auto bounds
        resolved.append(t)
        keys = public_keys(spark, spec, t.table, checked.valid)
        tables.update(table_frames(spec, t, checked.valid, secrets, keys))
    plan = ReleasePlan(spec, tuple(resolved))
    return Release(tables, plan, privacy_report(plan), checked.quarantined, rid)


def _refuse_handed_out(admission: Admission, attempt: Attempt) -> None:
    """A release id this API handed out has no release to return without a second draw."""
    if admission.committed_at is not None:
        raise BudgetError(
            f"release id {attempt.release_id!r} is already charged in the ledger and was handed "
            "to Python; drawing it again would spend its budget a second time unrecorded: use a "
            "new release id"
        )
