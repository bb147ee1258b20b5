"""One table of a release, as a chain of DataFrame transformations.

``microdata -> cell identities -> bound_contributions -> aggregate_partitions -> public join |
pre-threshold and the data's cell keys -> add_noise (measurements, and the selection statistic
unless the released unit count is it) -> keep selected -> finalize``.

The result is lazy; because noise is keyed (see :mod:`pipelines.noise`), evaluating it twice gives
the same released values.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dp_ops.keyed_stream import new_key
from pipelines.aggregation import UNITS, aggregate_partitions, measure_columns
from pipelines.bounding import bound_contributions
from pipelines.cells import CELL_IDS, cell_keys, with_cell_ids
from pipelines.noise import KeepJob, NoiseJob, add_noise
from pipelines.partitions import join_public
from pipelines.plan import TablePlan
from pipelines.postprocess import finalize

SELECT = "_select"


@dataclass(frozen=True, repr=False)
class Secrets:
    """Per-release secrets from the OS CSPRNG: the noise key and the bounding salt. Never logged."""

    key: bytes
    salt: tuple[int, int, int, int]
    cell_salt: tuple[int, int, int, int]
    """Keys the cell identities (:mod:`pipelines.cells`)."""

    @classmethod
    def new(cls) -> Secrets:
        salt = struct.unpack("<8q", os.urandom(64))
        return cls(key=new_key(), salt=(salt[0], salt[1], salt[2], salt[3]), cell_salt=salt[4:8])

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"


def bounded_aggregates(df: DataFrame, plan: TablePlan, unit: str, secrets: Secrets) -> DataFrame:
    """Exact aggregates of the bounded data per cell present in the data (not private).

    ``(_c1, _c2, measures...)``: cells by identity (:mod:`pipelines.cells`); only measures for a
    table without dimensions.
    """
    t = plan.table
    cells: list[str] = []
    if t.dimensions:
        keep = list(dict.fromkeys([unit, *(v.column for v in plan.values)]))
        df = with_cell_ids(df, t.dimensions, secrets.cell_salt, keep)
        cells = list(CELL_IDS)
    return df.transform(
        bound_contributions,
        unit,
        cells,
        plan.values,
        t.bounds.max_partitions,
        t.bounds.max_rows_per_partition,
        secrets.salt,
    ).transform(aggregate_partitions, cells, plan.values)


def release_table(
    df: DataFrame,
    plan: TablePlan,
    unit: str,
    secrets: Secrets,
    public_keys: DataFrame | None,
    nonnegative: bool = True,
    add_noise_: bool = True,
) -> DataFrame:
    """The released table: ``(dims..., metrics...)``.

    ``add_noise_=False`` is a test mode only: bounding, selection by the exact count and
    aggregation without noise, so tests can compare exactly. The jobs never set it.
    """
    dims = list(plan.table.dimensions)
    measures = measure_columns(plan.values)
    cells = bounded_aggregates(df, plan, unit, secrets)
    name = plan.table.name
    jobs: list[NoiseJob | KeepJob] = [NoiseJob(m, f"{name}/{m.column}") for m in plan.measurements]
    sel = plan.selection
    if sel is None:
        if public_keys is None and dims:
            raise ValueError(f"table {name!r} has public partitions but no key DataFrame")
        keys = cell_keys(public_keys, dims, secrets.cell_salt) if public_keys is not None else None
        cells = join_public(cells, keys, dims, measures)
    else:
        cells = cells.where(F.col(UNITS) >= sel.pre_threshold)
        if dims:  # the dimension values of the cells found in the data
            found = cell_keys(df, dims, secrets.cell_salt)
            cells = cells.join(found, on=list(CELL_IDS)).select(*dims, *measures)
        shifted = F.col(UNITS) - F.lit(sel.pre_threshold - 1)
        if sel.table is not None:  # truncated geometric: SELECT becomes 1 (kept) or 0
            cells = cells.withColumn(SELECT, F.col(UNITS))
            jobs.append(KeepJob(SELECT, sel.table, f"{name}/{SELECT}"))
        elif sel.noise is not None:  # thresholding of a separate noisy count
            cells = cells.withColumn(SELECT, shifted)
            jobs.append(NoiseJob(sel.noise, f"{name}/{SELECT}"))
    noisy = add_noise(cells, dims, jobs, secrets.key) if add_noise_ else cells
    if sel is not None:
        if sel.strategy == "post_aggregation":  # the released unit count decides
            noisy = noisy.where(F.col(UNITS) - F.lit(sel.pre_threshold - 1) >= sel.threshold)
        else:
            noisy = noisy.where(F.col(SELECT) >= sel.threshold).drop(SELECT)
    return finalize(noisy, plan, nonnegative)
