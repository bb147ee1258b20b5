"""``dprelease audit``: a black-box audit of a spec's mechanisms on synthetic neighbouring
datasets (pipelines.audit), with a planted control that must be caught. Reads no data of the
user's and spends nothing: the datasets are made up.

Exit codes: 0 every claim held and every control was caught; 6 a claim was exceeded (a bug);
7 a control was not caught (too few replicates to say anything: raise ``--replicates``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark.sql import SparkSession

from jobs.progress import stage
from pipelines.audit import MeasurementAudit, audit_table, auditable
from pipelines.persistence import release_scope
from pipelines.plan import plan_release
from pipelines.spec import ReleaseSpec

log = logging.getLogger("dprelease")

EXIT_EXCEEDED, EXIT_WEAK = 6, 7
ALPHA = 1e-6


def run_audit(
    spark: SparkSession, spec: ReleaseSpec, replicates: int, alpha: float = ALPHA
) -> tuple[list[MeasurementAudit], list[str]]:
    """Every auditable table's measurements; and why the others were left out."""
    plan = plan_release(spec)
    audits: list[MeasurementAudit] = []
    skipped = []
    for t in plan.tables:
        reason = auditable(t.table)
        if reason is not None:
            skipped.append(f"{t.table.name}: {reason}")
            continue
        with stage(f"table {t.table.name}: audit its mechanisms", spark), release_scope():
            audits += audit_table(spark, t, spec.input.privacy_unit, replicates, alpha)
    return audits, skipped


def verdict(audits: list[MeasurementAudit]) -> int:
    if any(a.exceeded for a in audits):
        return EXIT_EXCEEDED
    if not all(a.control_caught for a in audits):
        return EXIT_WEAK
    return 0


def render(audits: list[MeasurementAudit], skipped: list[str], alpha: float) -> str:
    lines = [
        f"empirical epsilon lower bounds per cell, at level {alpha:g} (each holds unless the "
        "mechanism leaks more than claimed)",
        f"{'table':<28} {'measurement':<22} {'mechanism':<18} {'claimed':>9} {'delta':>7} "
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
            f"{a.table:<28} {a.measurement:<22} {a.mechanism:<18} {a.claimed_epsilon:>9.4f} "
            f"{a.delta:>7.0e} {a.epsilon_lower_bound:>11.4f} {a.control_lower_bound:>9.4f}  {word}"
        )
    lines += [f"not audited: {s}" for s in skipped]
    return "\n".join(lines)


def as_json(audits: list[MeasurementAudit], skipped: list[str], alpha: float) -> str:
    rows: list[dict[str, Any]] = [
        {**a.__dict__, "exceeded": a.exceeded, "control_caught": a.control_caught} for a in audits
    ]
    return json.dumps({"alpha": alpha, "measurements": rows, "not_audited": skipped}, indent=2)
