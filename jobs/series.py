"""A release series between periods: its place, its key and its tree, kept owner-only.

``<output>/.private/series/<name>/`` holds what a period needs from the periods before it:

* ``key``: the series' noise key (32 random bytes, hex), made at the first period;
* ``tree.json``: the tree the series was charged for (depth, ``K``, noise family, cost, each
  node's noise), recorded at the first period; a period planned otherwise is refused;
* ``exact/<table>/<level>-<index>/``: the exact bounded cells of every node (a leaf's: its
  period's; above, the sum of its children's), never released;
* ``nodes/<table>/<level>-<index>/``: every node of the tree, as measured (noisy);
* ``estimates/<table>/<level>-<index>/``: each node's estimate from its measurement and its
  children's estimates (post-processing; totals to date sum them);
* ``admitted/<t>/``: keyed digests of the privacy units period ``t`` counted, when a unit may
  contribute to fewer periods than the series has (``max_periods``).

Each is written once, Parquet with Spark's ``_SUCCESS`` marker, and read back from then on: a
retried period reuses the nodes it measured, whatever the input says now, so no node is ever
drawn twice (two draws of one node with the same key over changed data would reveal the
change). A directory without the marker is a crashed attempt's: it was never read, and is
written again.

Periods run in order: period ``t`` needs period ``t - 1`` published at the same output.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import suppress

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dp_ops.continual import Node, ending_at, level_weights, prefix_nodes
from dp_ops.errors import BudgetError, SpecError
from jobs import writer
from jobs.storage import Store, join
from pipelines.partitions import PublicKeys
from pipelines.periods import label, ordinal, position
from pipelines.plan import TablePlan
from pipelines.release import Secrets, all_measures
from pipelines.series import (
    SeriesPlan,
    node_cells,
    node_estimate,
    period_cells,
    released_period,
    summed,
)
from pipelines.spec import ReleaseSpec, SeriesSpec

UNIT_KEY = "_unit_key"


def series_period(spec: ReleaseSpec, release_id: str | None) -> tuple[str, int]:
    """(period, place in the series) of a series' release id ``<name>-<period>``; SpecError
    for any other id, or a period outside the series."""
    series = spec.series
    if series is None:
        raise SpecError("series_period of a spec without a series")
    prefix = f"{series.name}-"
    if release_id is None or not release_id.startswith(prefix):
        raise SpecError(
            f"the spec is the series {series.name!r}: give the period to release with "
            f"--period (for example --period {series.start}); its release id is "
            f"{series.release_id(series.start)}"
        )
    period = release_id[len(prefix) :]
    return period, position(period, series.start, series.period, series.horizon)


def previous_period(series: SeriesSpec, t: int) -> str:
    """The label of the period before the ``t``-th."""
    return label(ordinal(series.start, series.period) + t - 2, series.period)


def check_order(store: Store, spec: ReleaseSpec, t: int) -> None:
    """BudgetError unless the period before the ``t``-th is published at the output."""
    series = spec.series
    if series is None or t == 1:
        return
    before = previous_period(series, t)
    if writer.read_manifest(store, spec.output.path, series.release_id(before)) is None:
        raise BudgetError(
            f"series {series.name!r}: period {before} is not published at "
            f"{spec.output.path!r}; release the periods in order (period {before} first)"
        )


class SeriesState:
    """The series' private state on ``store`` (see the module docstring)."""

    def __init__(self, spark: SparkSession, store: Store, spec: ReleaseSpec) -> None:
        if spec.series is None:
            raise SpecError("SeriesState of a spec without a series")
        self.spark = spark
        self.store = store
        self.series = spec.series
        self.root = join(writer.private_dir(store, spec.output.path), "series", spec.series.name)
        store.mkdirs(self.root, private=True)
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The series' noise key, made at its first use and the same ever after."""
        if self._key is None:
            self._key = self._stored_key()
        return self._key

    def _stored_key(self) -> bytes:
        path = join(self.root, "key")
        stored = self.store.read(path)
        if stored is None:
            with suppress(FileExistsError):  # another attempt made it first: use theirs
                self.store.create_new(path, os.urandom(32).hex().encode("ascii"), private=True)
            stored = self.store.read(path)
        if stored is None:
            raise SpecError(f"series state {self.root!r}: the key cannot be read back")
        return bytes.fromhex(stored.decode("ascii"))

    def check_tree(self, splan: SeriesPlan) -> None:
        """Record the series' tree (:meth:`SeriesPlan.tree`) at its first run, and refuse
        (BudgetError) a later run that plans another: its nodes would spend what the series was
        not charged for."""
        path = join(self.root, "tree.json")
        planned = splan.tree()
        stored = self.store.read(path)
        if stored is None:
            with suppress(FileExistsError):  # another attempt recorded it first: compare
                text = json.dumps(planned, indent=2, sort_keys=True)
                self.store.create_new(path, text.encode("utf-8"), private=True)
            stored = self.store.read(path)
        if stored is None:
            raise SpecError(f"series state {self.root!r}: its tree cannot be read back")
        recorded = json.loads(stored.decode("utf-8"))
        if recorded != planned:
            changed = sorted(
                k for k in planned.keys() | recorded.keys() if recorded.get(k) != planned.get(k)
            )
            raise BudgetError(
                f"series {self.series.name!r}: this run plans its tree otherwise than the series' "
                f"first period recorded ({', '.join(changed)} differ; recorded in "
                f"{path!r}), and the series was charged for that tree. Finish the series with "
                "the dprelease version that started it, or start a new series under a new name"
            )

    def once(self, path: str, compute: Callable[[], DataFrame]) -> DataFrame:
        """The table at ``path`` (under the state's root), computed and written if it is not
        there yet; read back from storage either way."""
        full = join(self.root, path)
        if not self.store.exists(join(full, "_SUCCESS")):
            if self.store.exists(full):  # a crashed attempt's partial write: never read
                self.store.delete(full)
            compute().write.mode("error").parquet(full)
            self.store.make_private(full)
        return self.spark.read.parquet(full)

    def read(self, path: str) -> DataFrame:
        full = join(self.root, path)
        if not self.store.exists(join(full, "_SUCCESS")):
            raise BudgetError(
                f"series {self.series.name!r}: its state lacks {path!r}; the series' private "
                f"state under {self.root!r} must stay with its output"
            )
        return self.spark.read.parquet(full)

    def admitted(self, df: DataFrame, unit: str, t: int) -> DataFrame:
        """The rows of period ``t`` whose unit has used fewer than ``max_periods`` periods
        before it (all rows when every unit may contribute to every period)."""
        s = self.series
        if s.max_periods >= s.horizon:
            return df
        # keyed by a one-way derivative of the noise key: it sits in the Spark plan, the noise
        # key never does
        units_key = hashlib.sha256(b"dprelease series units|" + self.key()).hexdigest()
        digest = F.unhex(F.sha2(F.concat(F.lit(units_key + "|"), F.col(unit).cast("string")), 256))
        keyed = df.withColumn(UNIT_KEY, digest)

        def compute() -> DataFrame:
            current = keyed.select(UNIT_KEY).distinct()
            if t == 1:
                return current
            earlier = [self.read(f"admitted/{p}") for p in range(1, t)]
            used = earlier[0]
            for e in earlier[1:]:
                used = used.unionByName(e)
            full = used.groupBy(UNIT_KEY).count().where(F.col("count") >= s.max_periods)
            return current.join(full.select(UNIT_KEY), on=UNIT_KEY, how="left_anti")

        allowed = self.once(f"admitted/{t}", compute)
        return keyed.join(allowed, on=UNIT_KEY, how="left_semi").drop(UNIT_KEY)

    def table_frame(
        self,
        tplan: TablePlan,
        depth: int,
        t: int,
        df: DataFrame,
        unit: str,
        secrets: Secrets,
        keys: PublicKeys | None,
        nonnegative: bool,
    ) -> DataFrame:
        """The released table of period ``t`` in a tree of ``depth`` levels: its exact cells
        kept, the nodes it ends measured (noise keyed by the series' key) and estimated, the
        period's values and totals to date from them."""
        name = tplan.table.name
        weights = level_weights(depth)
        for node in ending_at(t, self.series.horizon, depth):  # the leaf first
            self._measure(
                tplan,
                node,
                weights[node.level][0],
                lambda: period_cells(df, tplan, unit, secrets, keys),
            )
        leaf = self.read(_path("nodes", name, Node(0, t - 1)))
        to_date = [
            self.read(_path("estimates", name, n))
            for n in prefix_nodes(t, self.series.horizon, depth)
        ]
        return released_period(leaf, to_date, tplan, nonnegative)

    def _measure(
        self, tplan: TablePlan, node: Node, weight: float, period: Callable[[], DataFrame]
    ) -> None:
        """Keep a node's exact cells (a leaf's: ``period``; above, its children's summed: two
        reads however many periods it spans), its measurement and its estimate, each once."""
        name = tplan.table.name
        below: list[DataFrame] = []
        if node.level == 0:
            cells = self.once(_path("exact", name, node), period)
        else:
            halves = [self.read(_path("exact", name, c)) for c in node.children]
            measures = all_measures(tplan)
            dims = list(tplan.table.dimensions)
            cells = self.once(_path("exact", name, node), lambda: summed(halves, dims, measures))
            below = [self.read(_path("estimates", name, c)) for c in node.children]
        key = self.key()
        noisy = self.once(_path("nodes", name, node), lambda: node_cells(cells, tplan, node, key))
        self.once(
            _path("estimates", name, node), lambda: node_estimate(noisy, below, tplan, weight)
        )


def _path(kind: str, table: str, node: Node) -> str:
    """Where a node's ``exact`` cells, measurement (``nodes``) or ``estimates`` are kept."""
    return f"{kind}/{table}/{node.name}"
