"""``dprelease audit``: a black-box audit of a spec's mechanisms on synthetic neighbouring
datasets (measurements: pipelines.audit; private selection: pipelines.audit_selection; bounds
the release chooses: pipelines.audit_bounds), each with a planted control that must be caught.
Reads no data of the user's and spends nothing: the datasets are made up.

Exit codes: 0 every claim held and every control was caught; 6 a claim was exceeded (a bug);
7 a control was not caught (too few replicates to say anything: raise ``--replicates``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql import SparkSession

from jobs.progress import stage
from pipelines.audit import MeasurementAudit, audit_categories, audit_table
from pipelines.audit_bounds import audit_bound_choices
from pipelines.audit_selection import audit_selection
from pipelines.persistence import release_scope
from pipelines.plan import declared_cell_count, plan_release
from pipelines.spec import ReleaseSpec

log = logging.getLogger("dprelease")

EXIT_EXCEEDED, EXIT_WEAK = 6, 7
ALPHA = 1e-6


def run_audit(
    spark: SparkSession, spec: ReleaseSpec, replicates: int, alpha: float = ALPHA
) -> list[MeasurementAudit]:
    """Every table's measurements, chosen bounds and selection, each with its control."""
    plan = plan_release(spec)
    audits: list[MeasurementAudit] = []
    for t in plan.tables:
        unit = spec.input.privacy_unit
        with stage(f"table {t.table.name}: audit its mechanisms", spark), release_scope():
            audits += audit_table(spark, t, unit, replicates, alpha)
            audits += audit_categories(spark, t, unit, replicates, alpha)
        if t.table.auto_bounds:
            cells = declared_cell_count(spec, t.table)
            with stage(f"table {t.table.name}: audit the bounds it chooses", spark):
                audits += audit_bound_choices(spark, t, unit, replicates, alpha, cells)
        if t.selection is not None:
            with stage(f"table {t.table.name}: audit its selection", spark), release_scope():
                audits += audit_selection(spark, t, replicates, alpha)
    return audits


def verdict(audits: list[MeasurementAudit]) -> int:
    if any(a.exceeded for a in audits):
        return EXIT_EXCEEDED
    if not all(a.control_caught for a in audits):
        return EXIT_WEAK
    return 0


def render(audits: list[MeasurementAudit], alpha: float) -> str:
    lines = [
        f"empirical epsilon lower bounds per cell, at level {alpha:g} (each holds unless the "
        "mechanism leaks more than claimed)",
        f"{'table':<28} {'measurement':<22} {'mechanism':<30} {'claimed':>9} {'delta':>7} "
        f"{'lower bound':>11} {'control':>9}  verdict",
    ]
    for a in audits:
        if a.exceeded:
            word = "EXCEEDED: the mechanism leaks more than it claims"
        elif not a.control_caught:
            word = "held; control NOT caught (raise --replicates)"
        else:
            word = "held; control caught"
        lines.append(
            f"{a.table:<28} {a.measurement:<22} {a.mechanism:<30} {a.claimed_epsilon:>9.4f} "
            f"{a.delta:>7.0e} {a.epsilon_lower_bound:>11.4f} {a.control_lower_bound:>9.4f}  {word}"
        )
    return "\n".join(lines)


def as_json(audits: list[MeasurementAudit], alpha: float) -> str:
    rows: list[dict[str, Any]] = [
        {**a.__dict__, "exceeded": a.exceeded, "control_caught": a.control_caught} for a in audits
    ]
    return json.dumps({"alpha": alpha, "measurements": rows}, indent=2)
