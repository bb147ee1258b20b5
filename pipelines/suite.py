"""A table suite on Spark: every table at every geographic level from one least-squares estimate.

A suite (``geography`` and ``margins`` in the spec) measures, at each geographic level and for
each unit, the detailed attribute cells and every margin, each from the same bounded rows with
its own noise. :func:`release_suite` then, per metric:

1. puts each unit's measurements side by side as arrays, one per query (the unit's row);
2. runs the two least-squares passes of :mod:`dp_ops.marginals` level by level, bottom-up then
   top-down: per unit a few products of d-vectors with d x d matrices that depend only on the
   shape of the unit's subtree (found on the driver from the public geography, shipped with
   the functions);
3. makes the detailed tables non-negative integers top-down with :mod:`dp_ops.integer_tables`:
   each root's table, then per unit its children's tables as one matrix whose row sums (the
   children's totals) and column sums (the unit's cells) are both kept, so the units' totals
   stay unbiased at every level;
4. releases every table as a sum of the finest integer table, so all of them agree exactly,
   each cell with the standard deviation of its least-squares estimate.

What reaches the driver: the geography above the finest level (one row per unit of a coarser
level, from the public keys) and its shapes' matrices. Nothing derived from the data does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import prod
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops import integer_tables, marginals
from pipelines import noise as noising
from pipelines import sql_text as sql
from pipelines.aggregation import COUNT, UNITS
from pipelines.cells import CELL_ID, driver_cell_ids, require_distinct
from pipelines.noise import NoiseJob, noise_in_plan
from pipelines.partitions import ARROW_TYPES, combinations, cross_rows, join_public, local_frame
from pipelines.persistence import keep, keep_flat
from pipelines.plan import TablePlan, error_columns, suite_column
from pipelines.release import Secrets, bounded_aggregates, cell_key_frame, driver_key_types
from pipelines.spark_compat import arrow_frame, bound_plan_strings, to_arrow
from pipelines.spec import TableSpec

CELL, QCELL, UP, DOWN, CHILD_DOWN = "_attr_cell", "_q", "_up", "_down", "_child_down"
PARENT_UP = "_pup"
PAIR = 1_000_003
"""Key of a (child, parent) signature pair: ``child * PAIR + parent``."""
EXACT = {"count": COUNT, "privacy_unit_count": UNITS}


@dataclass(frozen=True)
class SuiteKeys:
    """A suite's public cells: its finest geographic units (a DataFrame of the finest level's
    columns, each unit once) and its attributes' values (typed like the input, spec order)."""

    units: DataFrame
    domains: tuple[tuple[str, tuple[Any, ...]], ...]
    rows: pa.Table | None = None
    """The same units on the driver (typed like the input), when the spec declares them."""

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.domains)

    def values(self, attribute: str) -> list[Any]:
        """An attribute's values in sorted order: the order of the attribute cells (C order
        over the attributes), which is the order Spark breaks ties in by key."""
        return sorted(dict(self.domains)[attribute])


def _grid(keys: SuiteKeys, query: Sequence[str], index: str, schema: T.StructType) -> DataFrame:
    """The cells of a query over the attributes, each with its position (C order)."""
    values = [keys.values(a) for a in query]
    rows = list(itertools.product(*values))
    columns: dict[str, list[Any]] = {a: [r[i] for r in rows] for i, a in enumerate(query)}
    columns[index] = list(range(len(rows)))
    fields = [schema[a] for a in query] + [T.StructField(index, T.LongType(), False)]
    return local_frame(keys.units.sparkSession, columns, T.StructType(fields))


def _join(left: DataFrame, right: DataFrame, on: Sequence[str]) -> DataFrame:
    return left.join(right, on=list(on)) if on else left.crossJoin(right)


def _array(column: str) -> str:
    pairs = f"array_sort(collect_list(struct({sql.name(QCELL)}, {sql.name(column)} AS v)))"
    return f"transform({pairs}, x -> CAST(x.v AS DOUBLE))"


def _wide(
    measured: DataFrame,
    geo: Sequence[str],
    query: Sequence[str],
    grid: DataFrame | None,
    columns: dict[str, str],
) -> DataFrame:
    """Per unit of ``geo``, each measured column as an array over the query's cells (by
    position): ``columns`` maps measured column -> array column."""
    located = (
        measured.join(F.broadcast(grid), on=list(query))
        if grid is not None
        else measured.withColumn(QCELL, F.lit(0).cast("long"))
    )
    arrays = [F.expr(_array(c)).alias(out) for c, out in columns.items()]
    return located.groupBy(*geo).agg(*arrays)


@dataclass(frozen=True)
class _Geography:
    """The public shape of the geography, found on the driver: per coarser level, its units in
    order with their signatures (:mod:`dp_ops.marginals`), and the parent array of the whole
    forest (the finest units as anonymous leaves)."""

    parent: np.ndarray
    level_rows: tuple[list[tuple[Any, ...]], ...]
    """Per level above the finest, its units' key values, in node order."""
    first: tuple[int, ...]
    """Per level above the finest, the node index of its first unit."""
    leaf_parent_children: tuple[int, ...]
    """Per unit of the level above the finest, its first leaf's node index."""


def _geography(table: TableSpec, units: DataFrame) -> _Geography:
    """Collects the coarser levels' units (public keys only) and builds the forest."""
    geo = table.geography
    last = len(geo) - 1
    if last == 0:  # one level: every unit is a root and a leaf of the same shape
        return _Geography(np.array([-1]), (), (), ())
    above = list(geo[last - 1])  # every coarser level's columns are among these
    children = to_arrow(units.groupBy(*above).count()).to_pylist()  # safe: public keys
    count_of = {tuple(r[c] for c in above): int(r["count"]) for r in children}
    level_rows = [
        sorted({tuple(key[above.index(c)] for c in geo[g]) for key in count_of})
        for g in range(last)
    ]
    parent: list[int] = []
    first: list[int] = []
    index: list[dict[tuple[Any, ...], int]] = []
    for g in range(last):
        first.append(len(parent))
        positions = [geo[g].index(c) for c in geo[g - 1]] if g else []
        here: dict[tuple[Any, ...], int] = {}
        for row in level_rows[g]:
            here[row] = len(parent)
            parent.append(index[g - 1][tuple(row[i] for i in positions)] if g else -1)
        index.append(here)
    leaf_first = []
    for row in level_rows[last - 1]:
        leaf_first.append(len(parent))
        parent.extend([index[last - 1][row]] * count_of[row])
    return _Geography(np.array(parent), tuple(level_rows), tuple(first), tuple(leaf_first))


def _matrix_pass(
    kind: str,
    metrics: Sequence[str],
    matrices: dict[str, dict[str, Any]],
    sizes: tuple[int, ...],
    level: dict[str, marginals.LevelMeasures],
    queries: int,
    names: Sequence[str],
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A mapInArrow function for one level's pass, per metric (``kind``): ``leaf``
    ``m = C eta``; ``up`` ``m = C (eta + V^-1 S)``; ``down`` ``final = m + C V_p^-1 (final_p -
    S_p)``, with ``eta`` from the unit's measurement arrays. Yields the columns ``names``."""
    d = prod(sizes)

    def vectors(batch: pa.RecordBatch, name: str) -> np.ndarray:
        column = batch.column(batch.schema.get_field_index(name))
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        return flat.reshape(batch.num_rows, -1)

    def longs(batch: pa.RecordBatch, name: str) -> np.ndarray:
        column = batch.column(batch.schema.get_field_index(name))
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)

    def as_list(x: np.ndarray) -> pa.Array:
        offsets = pa.array(np.arange(0, (x.shape[0] + 1) * d, d, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.float64()))

    def by_signature(sig: np.ndarray, rows: np.ndarray, table: Any) -> np.ndarray:
        out = np.empty((rows.shape[0], d))
        for s in np.unique(sig):
            at = sig == s
            out[at] = marginals.matvec(table[int(s)], rows[at])
        return out

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns: dict[str, pa.Array] = {}
            up = longs(batch, UP)
            for metric in metrics:
                mats = matrices[metric]
                if kind == "down":
                    pair = up * PAIR + longs(batch, PARENT_UP)
                    step = by_signature(pair, vectors(batch, f"_pdiff_{metric}"), mats["gain"])
                    columns[f"_final_{metric}"] = as_list(vectors(batch, f"_m_{metric}") + step)
                    continue
                ys = [vectors(batch, f"_y{q}_{metric}") for q in range(queries)]
                eta = level[metric].eta(sizes, ys)
                if kind == "up":
                    sums = vectors(batch, f"_s_{metric}")
                    eta = eta + by_signature(up, sums, mats["V_inv"])
                    columns[f"_s_{metric}"] = as_list(sums)
                columns[f"_m_{metric}"] = as_list(by_signature(up, eta, mats["C"]))
            arrays = [
                columns[n] if n in columns else batch.column(batch.schema.get_field_index(n))
                for n in names
            ]
            yield pa.RecordBatch.from_arrays(arrays, names=list(names))

    return run


def _vector_sum(child_geo: Sequence[str], column: str, d: int, out: str) -> Any:
    """Per parent unit, the sum of its children's arrays, added in the children's key order
    (the same bits however Spark partitions them)."""
    keys = ", ".join(sql.name(c) for c in child_geo)
    ordered = (
        f"transform(array_sort(collect_list(struct({keys}, {sql.name(column)} AS v))), x -> x.v)"
    )
    zero = f"array_repeat(CAST(0 AS DOUBLE), {d})"
    add = "(acc, x) -> zip_with(acc, x, (a, b) -> a + b)"
    return F.expr(f"aggregate({ordered}, {zero}, {add})").alias(out)


VECTOR = T.ArrayType(T.DoubleType(), True)


def _with_vectors(
    frame: DataFrame, keep_columns: Sequence[str], added: Sequence[str]
) -> T.StructType:
    fields = {f.name: f for f in frame.schema.fields}
    return T.StructType(
        [fields[c] for c in keep_columns] + [T.StructField(c, VECTOR, True) for c in added]
    )


@dataclass(frozen=True)
class _Suite:
    """What the steps of one suite's release share."""

    plan: TablePlan
    keys: SuiteKeys
    schema: T.StructType

    @property
    def table(self) -> TableSpec:
        return self.plan.table

    @property
    def geo(self) -> list[list[str]]:
        return [list(g) for g in self.table.geography]

    @property
    def last(self) -> int:
        return len(self.table.geography) - 1

    @property
    def attrs(self) -> list[str]:
        return list(self.table.attributes)

    @property
    def queries(self) -> list[list[str]]:
        return [list(q) for q in self.table.suite_queries]

    @property
    def query_positions(self) -> list[marginals.Query]:
        positions = {a: i for i, a in enumerate(self.attrs)}
        return [tuple(positions[a] for a in q) for q in self.queries]

    @property
    def metrics(self) -> list[str]:
        return [m.kind for m in self.table.metrics]

    def column(self, metric: str, g: int, q: int) -> str:
        """The measurement of ``metric`` by query q at level g (the table's own at the finest)."""
        if (g, q) == (self.last, 0):
            return metric
        return suite_column(EXACT[metric], g, q)

    def grid(self, query: Sequence[str], index: str) -> DataFrame:
        return _grid(self.keys, query, index, self.schema)


def _finest(suite: _Suite, cells: DataFrame, secrets: Secrets, cell_grid: DataFrame) -> DataFrame:
    """The exact finest cells in Spark: every unit with every attribute cell (zero where no one
    is), from the bounded data's ``cells`` (by identity)."""
    dims = list(suite.table.dimensions)
    all_keys = suite.keys.units.crossJoin(cell_grid.drop(CELL))
    key_frame = cell_key_frame(all_keys, dims, secrets, suite.table.name)
    joined = join_public(cells, key_frame, dims, [COUNT, UNITS])
    return joined.select(*suite.geo[-1], *suite.attrs, COUNT, UNITS)


def _finest_on_driver(suite: _Suite, cells: DataFrame, secrets: Secrets) -> pa.Table | None:
    """The exact finest cells on the driver, when the units are declared (on the driver) and
    the cells number at most ``DRIVER_MAX_CELLS``: the keys' identities are computed here and
    the data's cells collected once (None otherwise; ``cells`` is then kept for Spark's way)."""
    rows, limit = suite.keys.rows, noising.DRIVER_MAX_CELLS
    dims = list(suite.table.dimensions)
    if rows is None or not driver_key_types(suite.schema, dims):
        return None
    if rows.num_rows * prod(suite.keys.sizes) > limit:
        return None
    grid = combinations([(a, suite.keys.values(a)) for a in suite.attrs], suite.schema)
    assert grid is not None  # at most MAX_SUITE_CELLS attribute cells
    geo = suite.geo[-1]
    all_keys = cross_rows(rows.select(geo), grid).select(dims)
    keys = require_distinct(driver_cell_ids(all_keys, dims, secrets.cell_salt), suite.table.name)
    found = to_arrow(cells.limit(limit + 1))  # exact counts: never logged, never released
    if found.num_rows > limit:
        return None
    joined = keys.join(found, keys=[CELL_ID], join_type="left outer")
    filled = {m: pc.fill_null(joined.column(m), 0).cast(pa.int64()) for m in (COUNT, UNITS)}
    return pa.table({**{d: joined.column(d) for d in [*geo, *suite.attrs]}, **filled})


def _measure(
    suite: _Suite, finest: DataFrame, secrets: Secrets
) -> dict[tuple[int, int], DataFrame]:
    """Every measurement of the suite: per (level, query), the query's cells of each unit with
    one noisy column per metric. Noised in the plan of the level's least-squares pass, which is
    kept: each measurement is computed once, and a recomputed partition has the same noise."""
    t, metrics = suite.table, suite.metrics
    measured: dict[tuple[int, int], DataFrame] = {}
    for g, q in t.suite_measurements:
        out_dims = list(t.suite_dimensions(g, q))
        exact = finest
        if (g, q) != (suite.last, 0):
            sums = [F.sum(EXACT[m]).cast("long").alias(EXACT[m]) for m in metrics]
            exact = finest.groupBy(*out_dims).agg(*sums)
        columns = {m: suite.column(m, g, q) for m in metrics}
        exact = exact.select(*out_dims, *[F.col(EXACT[m]).alias(columns[m]) for m in metrics])
        jobs = [
            NoiseJob(suite.plan.noise_for(columns[m]), f"{t.name}/{columns[m]}") for m in metrics
        ]
        measured[(g, q)] = noise_in_plan(exact, out_dims, jobs, secrets.key)
    return measured


@dataclass(frozen=True)
class _Solved:
    """The driver's part: per metric the structure and its matrices, and per coarser level a
    frame of its units' signatures."""

    structures: dict[str, marginals.Structure]
    measures: dict[str, list[marginals.LevelMeasures]]
    matrices: dict[str, dict[str, Any]]
    signatures: list[DataFrame]
    leaf_up: int


def _level_measures(suite: _Suite) -> dict[str, list[marginals.LevelMeasures]]:
    """Per metric and geographic level, the queries and their planned noise variances."""
    queries = range(len(suite.queries))
    return {
        m: [
            marginals.LevelMeasures(
                tuple(suite.query_positions),
                tuple(suite.plan.noise_for(suite.column(m, g, q)).sd()[0] ** 2 for q in queries),
            )
            for g in range(len(suite.geo))
        ]
        for m in suite.metrics
    }


def _cell_sds(
    suite: _Suite, structures: dict[str, marginals.Structure]
) -> dict[tuple[str, int], np.ndarray]:
    """Per metric and query, the least-squares standard deviation of each query cell, by
    top-down signature (signatures x query cells): the same at every level."""
    return {
        (m, q): np.sqrt(
            marginals.cell_variances(structures[m], suite.keys.sizes, suite.query_positions[q])
        )
        for m in suite.metrics
        for q in range(len(suite.queries))
    }


def _solve(suite: _Suite) -> _Solved:
    shape = _geography(suite.table, suite.keys.units)
    measures = _level_measures(suite)
    structures = {
        m: marginals.solve_structure(shape.parent, suite.keys.sizes, measures[m])
        for m in suite.metrics
    }
    matrices: dict[str, dict[str, Any]] = {}
    for m, s in structures.items():
        gains: dict[int, np.ndarray] = {}
        for v, p in enumerate(shape.parent):
            key = int(s.up[v]) * PAIR + int(s.up[p])
            if p >= 0 and key not in gains:
                v_inv = s.V_inv[s.up[p]]
                assert v_inv is not None
                gains[key] = s.C[s.up[v]] @ v_inv
        matrices[m] = {"C": list(s.C), "V_inv": list(s.V_inv), "gain": gains}
    first = structures[suite.metrics[0]]  # signatures depend on the shape alone
    spark = suite.keys.units.sparkSession
    signatures = []
    for g in range(suite.last):
        rows, start = shape.level_rows[g], shape.first[g]
        columns: dict[str, list[Any]] = {
            c: [r[i] for r in rows] for i, c in enumerate(suite.geo[g])
        }
        columns[UP] = [int(first.up[start + i]) for i in range(len(rows))]
        columns[DOWN] = [int(first.down[start + i]) for i in range(len(rows))]
        columns[CHILD_DOWN] = (
            [int(first.down[j]) for j in shape.leaf_parent_children]
            if g == suite.last - 1
            else [-1] * len(rows)
        )
        fields = [suite.schema[c] for c in suite.geo[g]] + [
            T.StructField(c, T.LongType(), False) for c in (UP, DOWN, CHILD_DOWN)
        ]
        signatures.append(local_frame(spark, columns, T.StructType(fields)))
    leaf_up = int(first.up[len(shape.parent) - 1])
    return _Solved(structures, measures, matrices, signatures, leaf_up)


def _unit_rows(
    suite: _Suite, measured: dict[tuple[int, int], DataFrame], solved: _Solved
) -> list[DataFrame]:
    """Per level, one row per unit: its signatures and, per metric and query, its measurement
    as an array over the query's cells."""
    geo, last = suite.geo, suite.last
    grids = [suite.grid(q, QCELL) if q else None for q in suite.queries]
    rows = []
    for g in range(len(geo)):
        frame: DataFrame | None = None
        for q, query in enumerate(suite.queries):
            columns = {suite.column(m, g, q): f"_y{q}_{m}" for m in suite.metrics}
            wide = _wide(measured[(g, q)], geo[g], query, grids[q], columns)
            frame = wide if frame is None else _join(frame, wide, geo[g])
        assert frame is not None
        if g < last:
            frame = _join(frame, solved.signatures[g].drop(CHILD_DOWN), geo[g])
        elif last == 0:  # one level: every unit has the one shape
            frame = frame.withColumns({UP: F.lit(0).cast("long"), DOWN: F.lit(0).cast("long")})
        else:  # the finest units: one shape; the top-down one is their parent's children's
            parents = solved.signatures[last - 1].select(
                *geo[last - 1], F.col(CHILD_DOWN).alias(DOWN)
            )
            frame = _join(
                frame.withColumn(UP, F.lit(solved.leaf_up).cast("long")), parents, geo[last - 1]
            )
        rows.append(frame)
    return rows


def _least_squares(suite: _Suite, rows: list[DataFrame], solved: _Solved) -> list[DataFrame]:
    """Per level, each unit's final estimate per metric (``_final_<metric>`` arrays) with its
    top-down signature: the two passes of :mod:`dp_ops.marginals`, level by level."""
    geo, last, metrics, sizes = suite.geo, suite.last, suite.metrics, suite.keys.sizes
    d = prod(sizes)
    nodes = [[*geo[g], UP, DOWN] for g in range(len(geo))]
    up: list[DataFrame] = list(rows)
    for g in range(last, -1, -1):
        frame = rows[g]
        if g < last:
            sums = (
                up[g + 1]
                .groupBy(*geo[g])
                .agg(*[_vector_sum(geo[g + 1], f"_m_{m}", d, f"_s_{m}") for m in metrics])
            )
            frame = _join(frame, sums, geo[g])
        added = [c for m in metrics for c in ((f"_s_{m}",) if g < last else ()) + (f"_m_{m}",)]
        schema = _with_vectors(frame, nodes[g], added)
        fn = _matrix_pass(
            "leaf" if g == last else "up",
            metrics,
            solved.matrices,
            sizes,
            {m: solved.measures[m][g] for m in metrics},
            len(suite.queries),
            schema.names,
        )
        up[g] = keep_flat(frame.mapInArrow(fn, schema))
    finals = [f"_final_{m}" for m in metrics]
    final = [up[0].select(*nodes[0], *[F.col(f"_m_{m}").alias(f"_final_{m}") for m in metrics])]
    for g in range(1, len(geo)):
        sums = up[g - 1].select(*geo[g - 1], UP, *[f"_s_{m}" for m in metrics])
        parent = _join(final[g - 1].drop(UP, DOWN), sums, geo[g - 1])
        diffs = parent.select(
            *geo[g - 1],
            F.col(UP).alias(PARENT_UP),
            *[
                F.expr(f"zip_with(_final_{m}, _s_{m}, (a, b) -> a - b)").alias(f"_pdiff_{m}")
                for m in metrics
            ],
        )
        child = up[g].select(*nodes[g], *[f"_m_{m}" for m in metrics])
        joined = _join(child, diffs, geo[g - 1])
        schema = _with_vectors(joined, nodes[g], finals)
        fn = _matrix_pass("down", metrics, solved.matrices, sizes, {}, 0, schema.names)
        final.append(keep_flat(joined.mapInArrow(fn, schema)))
    return final


LONGS = T.ArrayType(T.LongType(), True)
KIDS = "_kids"


def _integer_pass(
    metrics: Sequence[str], d: int, keys: Sequence[str], children: bool, names: Sequence[str]
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """A mapInArrow function for one level of the integer step. Roots (``children`` False): per
    row, ``_int_<metric>`` from the row's ``_final_<metric>`` by
    :func:`integer_tables.root_counts`. Children: per parent row, its children (``_kids``:
    structs of ``keys`` and ``_final_<metric>``, in key order) with the parent's
    ``_pint_<metric>``, one output row per child by :func:`integer_tables.children_counts`."""

    def matrix(column: pa.Array) -> np.ndarray:
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
        return flat.reshape(-1, d)

    def as_list(x: np.ndarray) -> pa.Array:
        offsets = pa.array(np.arange(0, (x.shape[0] + 1) * d, d, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.int64()))

    def roots(batch: pa.RecordBatch) -> dict[str, pa.Array]:
        columns = {c: batch.column(batch.schema.get_field_index(c)) for c in keys}
        for m in metrics:
            final = matrix(batch.column(batch.schema.get_field_index(f"_final_{m}")))
            columns[f"_int_{m}"] = as_list(integer_tables.root_counts(final))
        return columns

    def kids(batch: pa.RecordBatch) -> dict[str, pa.Array]:
        listed = batch.column(batch.schema.get_field_index(KIDS))
        lengths = np.asarray(pc.list_value_length(listed).to_numpy(zero_copy_only=False))
        bounds = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        structs = listed.flatten()
        fields = dict(zip([f.name for f in structs.type], structs.flatten(), strict=True))
        columns: dict[str, pa.Array] = {c: fields[c] for c in keys}
        for m in metrics:
            final = matrix(fields[f"_final_{m}"])
            parents = batch.column(batch.schema.get_field_index(f"_pint_{m}"))
            parent = np.asarray(parents.flatten().to_numpy(zero_copy_only=False), np.int64)
            parent = parent.reshape(-1, d)
            out = np.zeros(final.shape, dtype=np.int64)
            for i in range(batch.num_rows):
                at = slice(bounds[i], bounds[i + 1])
                out[at] = integer_tables.children_counts(final[at], parent[i])
            columns[f"_int_{m}"] = as_list(out)
        return columns

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = kids(batch) if children else roots(batch)
            yield pa.RecordBatch.from_arrays([columns[n] for n in names], names=list(names))

    return run


def _integers(suite: _Suite, final: list[DataFrame], cell_grid: DataFrame) -> DataFrame:
    """The finest detailed table as non-negative integers consistent with every level (one
    column per metric), top-down as :func:`_driver_integers` makes it: per level one
    mapInArrow pass, the children of each unit in one row (in key order)."""
    geo, attrs, metrics = suite.geo, suite.attrs, suite.metrics
    d = prod(suite.keys.sizes)
    ints = [f"_int_{m}" for m in metrics]

    def schema(g: int) -> T.StructType:
        fields = [suite.schema[c] for c in geo[g]]
        return T.StructType(fields + [T.StructField(c, LONGS, True) for c in ints])

    out = schema(0)
    frame = final[0].select(*geo[0], *[f"_final_{m}" for m in metrics])
    level = keep_flat(frame.mapInArrow(_integer_pass(metrics, d, geo[0], False, out.names), out))
    for g in range(1, len(geo)):
        child = F.struct(*[F.col(c) for c in geo[g]], *[F.col(f"_final_{m}") for m in metrics])
        grouped = final[g].groupBy(*geo[g - 1]).agg(F.array_sort(F.collect_list(child)).alias(KIDS))
        parents = level.select(
            *geo[g - 1], *[F.col(f"_int_{m}").alias(f"_pint_{m}") for m in metrics]
        )
        joined = _join(grouped, parents, geo[g - 1])
        out = schema(g)
        fn = _integer_pass(metrics, d, geo[g], True, out.names)
        level = keep_flat(joined.mapInArrow(fn, out))
    first, rest = metrics[0], metrics[1:]
    exploded = level.select(
        *geo[-1], F.posexplode(f"_int_{first}").alias(CELL, first), *[f"_int_{m}" for m in rest]
    )
    exploded = exploded.withColumns({m: F.element_at(f"_int_{m}", F.col(CELL) + 1) for m in rest})
    located = exploded.join(F.broadcast(cell_grid), on=CELL)
    return keep_flat(located.select(*geo[-1], *attrs, *metrics))


def _tables(
    suite: _Suite, finest: DataFrame, final: list[DataFrame], solved: _Solved, confidence: float
) -> dict[str, DataFrame]:
    """Every released table, by name: sums of the finest integer table, each cell with the
    standard deviation and normal half-width of its least-squares estimate."""
    t, metrics = suite.table, suite.metrics
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    spark = finest.sparkSession
    sds = _cell_sds(suite, solved.structures)
    out: dict[str, DataFrame] = {}
    for (name, out_dims), (g, q) in zip(t.outputs, t.suite_measurements, strict=True):
        sums = [F.sum(m).cast("long").alias(m) for m in metrics]
        released = finest.groupBy(*out_dims).agg(*sums)
        released = _join(released, final[g].select(*suite.geo[g], DOWN), suite.geo[g])
        query = suite.queries[q]
        if query:
            released = released.join(F.broadcast(suite.grid(query, QCELL)), on=query)
        else:
            released = released.withColumn(QCELL, F.lit(0).cast("long"))
        for m in metrics:
            sd_col, hw_col = error_columns(m)
            signatures, cells = sds[(m, q)].shape
            sd = pa.table(
                {
                    DOWN: pa.array(np.repeat(np.arange(signatures), cells), pa.int64()),
                    QCELL: pa.array(np.tile(np.arange(cells), signatures), pa.int64()),
                    sd_col: pa.array(sds[(m, q)].reshape(-1), pa.float64()),
                }
            )
            fields = [
                T.StructField(DOWN, T.LongType(), False),
                T.StructField(QCELL, T.LongType(), False),
                T.StructField(sd_col, T.DoubleType(), False),
            ]
            sd_frame = arrow_frame(spark, sd, T.StructType(fields))
            released = released.join(F.broadcast(sd_frame), on=[DOWN, QCELL]).withColumn(
                hw_col, F.col(sd_col) * F.lit(z)
            )
        columns = [c for m in metrics for c in (m, *error_columns(m))]
        out[name] = released.select(*out_dims, *columns)
    return out


def release_suite(
    df: DataFrame,
    plan: TablePlan,
    unit: str,
    secrets: Secrets,
    keys: SuiteKeys,
    confidence: float,
) -> dict[str, DataFrame]:
    """The released tables of a suite, by output name (see the module docstring).

    ``keys``: its finest units and attribute values (public). Spends the plan's budget once per
    measurement; everything after the noise is post-processing.
    """
    suite = _Suite(plan, keys, df.schema)
    spark = df.sparkSession
    cells = keep(bounded_aggregates(df, plan, unit, secrets), eager=False)
    exact_table = _finest_on_driver(suite, cells, secrets)
    cell_grid = suite.grid(suite.attrs, CELL)
    exact = None
    if exact_table is None:
        exact = keep_flat(_finest(suite, cells, secrets, cell_grid), eager=False)
        if driver_key_types(suite.schema, list(suite.table.dimensions)):
            limit = noising.DRIVER_MAX_CELLS
            table = to_arrow(exact.limit(limit + 1))  # exact counts: never logged or released
            exact_table = table if table.num_rows <= limit else None
    if exact_table is not None:
        return _on_driver(suite, exact_table, secrets, confidence, spark)
    assert exact is not None
    bound_plan_strings(spark)
    measured = _measure(suite, exact, secrets)
    solved = _solve(suite)
    final = _least_squares(suite, _unit_rows(suite, measured, solved), solved)
    finest = _integers(suite, final, cell_grid)
    return _tables(suite, finest, final, solved, confidence)


def _on_driver(
    suite: _Suite, table: pa.Table, secrets: Secrets, confidence: float, spark: Any
) -> dict[str, DataFrame]:
    """The suite released on the driver from its exact finest cells (``table``, at most
    ``DRIVER_MAX_CELLS``): the same noise (keyed by cell identity), the same least squares and
    the same integer step as Spark's way, in numpy."""
    geo, attrs, metrics = suite.geo, suite.attrs, suite.metrics
    dims = [*geo[-1], *attrs]
    sizes = suite.keys.sizes
    d = prod(sizes)
    columns = {c: table.column(c).to_pylist() for c in dims}
    units = sorted(set(zip(*[columns[c] for c in geo[-1]], strict=True)))
    unit_of = {u: i for i, u in enumerate(units)}
    position = {a: {v: i for i, v in enumerate(suite.keys.values(a))} for a in attrs}
    cell = np.zeros(table.num_rows, dtype=np.int64)
    for a, n in zip(attrs, sizes, strict=True):
        cell = cell * n + np.array([position[a][v] for v in columns[a]], dtype=np.int64)
    row_unit = np.array(
        [unit_of[u] for u in zip(*[columns[c] for c in geo[-1]], strict=True)], dtype=np.int64
    )
    tree = _driver_tree(geo, units)
    parent, depth, nodes = tree
    leaves = np.flatnonzero(depth == len(geo) - 1)
    counts: dict[str, np.ndarray] = {}
    for m in metrics:
        leaf_counts = np.zeros((len(units), d), dtype=np.int64)
        leaf_counts[row_unit, cell] = np.asarray(table.column(EXACT[m]).to_numpy(), np.int64)
        counts[m] = _up_sums(parent, leaves, leaf_counts)
    measures = _level_measures(suite)
    released: dict[str, np.ndarray] = {}
    structures: dict[str, marginals.Structure] = {}
    noisy = _driver_noise(suite, nodes, depth, counts, secrets)
    for m in metrics:
        structures[m] = marginals.solve_structure(parent, sizes, measures[m])
        eta = np.zeros((len(parent), d))
        for g in range(len(geo)):
            at = np.flatnonzero(depth == g)
            ys = [noisy[(g, q)][m] for q in range(len(suite.queries))]
            eta[at] = measures[m][g].eta(sizes, ys)
        _, _, final = marginals.estimate_by_level(parent, structures[m], eta)
        released[m] = _up_sums(parent, leaves, _driver_integers(parent, depth, final))
    return _driver_tables(suite, nodes, depth, released, structures, confidence, spark)


def _driver_tree(
    geo: list[list[str]], units: list[tuple[Any, ...]]
) -> tuple[np.ndarray, np.ndarray, list[tuple[Any, ...]]]:
    """(parent, depth, key values) of every node of the geography, level by level, each level
    in key order, the finest units last."""
    parent: list[int] = []
    depth: list[int] = []
    nodes: list[tuple[Any, ...]] = []
    previous: dict[tuple[Any, ...], int] = {}
    for g, cols in enumerate(geo):
        positions = [geo[-1].index(c) for c in cols]
        above = [cols.index(c) for c in geo[g - 1]] if g else []
        here: dict[tuple[Any, ...], int] = {}
        for key in sorted({tuple(u[i] for i in positions) for u in units}):
            here[key] = len(nodes)
            parent.append(previous[tuple(key[i] for i in above)] if g else -1)
            depth.append(g)
            nodes.append(key)
        previous = here
    return np.array(parent, dtype=np.int64), np.array(depth, dtype=np.int64), nodes


def _up_sums(parent: np.ndarray, leaves: np.ndarray, leaf_values: np.ndarray) -> np.ndarray:
    """Every node's values: the leaves' (in node order), summed into their ancestors."""
    out = np.zeros((len(parent), leaf_values.shape[1]), dtype=leaf_values.dtype)
    out[leaves] = leaf_values
    for v in range(len(parent) - 1, -1, -1):
        if parent[v] >= 0:
            out[parent[v]] += out[v]
    return out


def _key_arrays(
    suite: _Suite, nodes: list[tuple[Any, ...]], at: np.ndarray, g: int, q: int
) -> dict[str, pa.Array]:
    """The key columns of level ``g``'s units ``at`` with every cell of query ``q`` (units
    slowest), typed like the input: the rows of measurement or output ``(g, q)``."""
    geo, query = suite.geo[g], suite.queries[q]
    cells = list(itertools.product(*[suite.keys.values(a) for a in query]))
    arrays: dict[str, pa.Array] = {}
    for c in suite.table.suite_dimensions(g, q):
        if c in geo:
            i = geo.index(c)
            column = [nodes[v][i] for v in at for _ in cells]
        else:
            j = query.index(c)
            column = [cell[j] for _ in at for cell in cells]
        arrays[c] = pa.array(column, type=ARROW_TYPES[type(suite.schema[c].dataType)])
    return arrays


def _driver_noise(
    suite: _Suite,
    nodes: list[tuple[Any, ...]],
    depth: np.ndarray,
    counts: dict[str, np.ndarray],
    secrets: Secrets,
) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Every measurement noised on the driver as ``add_noise`` noises it in Spark (the same
    cell identities and labels): per (level, query) and metric, units x query cells."""
    t, metrics = suite.table, suite.metrics
    out: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for g, q in t.suite_measurements:
        at = np.flatnonzero(depth == g)
        out_dims = list(t.suite_dimensions(g, q))
        arrays = _key_arrays(suite, nodes, at, g, q)
        for m in metrics:
            exact = marginals.marginal(suite.keys.sizes, suite.query_positions[q], counts[m][at])
            arrays[suite.column(m, g, q)] = pa.array(np.rint(exact).astype(np.int64).reshape(-1))
        table = pa.table(arrays)
        table = table.append_column(noising.CELL, noising.cell_digests(table, out_dims))
        jobs = [
            NoiseJob(
                suite.plan.noise_for(suite.column(m, g, q)), f"{t.name}/{suite.column(m, g, q)}"
            )
            for m in metrics
        ]
        noised = noising.noise_on_driver(table, jobs, secrets.key)
        out[(g, q)] = {
            m: np.asarray(noised.column(suite.column(m, g, q)).to_numpy(), np.float64).reshape(
                len(at), -1
            )
            for m in metrics
        }
    return out


def _driver_integers(parent: np.ndarray, depth: np.ndarray, final: np.ndarray) -> np.ndarray:
    """The finest units' detailed tables as non-negative integers, top-down as
    :func:`_integers` makes them on Spark: the roots by :func:`integer_tables.root_counts`,
    then each unit's children (in node order: key order) by
    :func:`integer_tables.children_counts`."""
    counts = np.zeros(final.shape, dtype=np.int64)
    roots = np.flatnonzero(depth == 0)
    counts[roots] = integer_tables.root_counts(final[roots])
    for g in range(1, int(depth.max()) + 1):
        level = np.flatnonzero(depth == g)
        level = level[np.argsort(parent[level], kind="stable")]  # by parent, then key order
        starts = np.flatnonzero(np.r_[True, np.diff(parent[level]) != 0])
        for kids in np.split(level, starts[1:]):
            counts[kids] = integer_tables.children_counts(final[kids], counts[parent[kids[0]]])
    leaves: np.ndarray = counts[depth == depth.max()]
    return leaves


def _driver_tables(
    suite: _Suite,
    nodes: list[tuple[Any, ...]],
    depth: np.ndarray,
    released: dict[str, np.ndarray],
    structures: dict[str, marginals.Structure],
    confidence: float,
    spark: Any,
) -> dict[str, DataFrame]:
    """Every released table from the driver's integer tables, with the Spark way's columns."""
    t, metrics = suite.table, suite.metrics
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    sds = _cell_sds(suite, structures)
    out: dict[str, DataFrame] = {}
    for (name, out_dims), (g, q) in zip(t.outputs, t.suite_measurements, strict=True):
        at = np.flatnonzero(depth == g)
        arrays = _key_arrays(suite, nodes, at, g, q)
        fields = [suite.schema[c] for c in out_dims]
        for m in metrics:
            sums = marginals.marginal(suite.keys.sizes, suite.query_positions[q], released[m][at])
            sd = sds[(m, q)][structures[m].down[at]].reshape(-1)
            sd_col, hw_col = error_columns(m)
            arrays[m] = pa.array(np.rint(sums).astype(np.int64).reshape(-1))
            arrays[sd_col] = pa.array(sd)
            arrays[hw_col] = pa.array(sd * z)
            fields += [
                T.StructField(m, T.LongType(), True),
                T.StructField(sd_col, T.DoubleType(), True),
                T.StructField(hw_col, T.DoubleType(), True),
            ]
        out[name] = noising.driver_frame(spark, pa.table(arrays), T.StructType(fields))
    return out
