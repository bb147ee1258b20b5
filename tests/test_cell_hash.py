"""Cell identities computed on the driver are Spark's, bit for bit."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from dp_ops.errors import InternalError, RerunError
from dp_ops.xxhash64 import hash_bytes
from jobs.runner import candidate_cells, public_keys, table_frames
from pipelines import cells as cells_module
from pipelines import noise as noise_module
from pipelines import release as release_module
from pipelines import sql_text as sql
from pipelines.cells import CELL_ID, cell_id, driver_cell_ids
from pipelines.plan import plan_release
from pipelines.release import Secrets, release_table
from pipelines.spark_compat import arrow_frame, to_arrow
from pipelines.spec import parse_spec
from tests.conftest import base_spec

SPARK_TYPES = {
    "s": T.StringType(),
    "i": T.IntegerType(),
    "l": T.LongType(),
    "b": T.BooleanType(),
    "d": T.DateType(),
    "y": T.ByteType(),
    "h": T.ShortType(),
}


def test_xxh64_reference_vectors() -> None:
    """The published XXH64 values (seed 0) of the reference implementation."""
    data = np.frombuffer(b"aabc", np.uint8)
    got = hash_bytes(data, np.array([0, 0, 1, 4]), np.zeros(3, np.uint64))
    assert [int(x) for x in got] == [0xEF46DB3751D8E999, 0xD24EC4F1A98C6E5B, 0x44BC2CF5AD770999]


def _keys(rng: random.Random, n: int) -> pa.Table:
    """Keys of every type the driver takes; strings of 0 to 70 UTF-8 bytes (every tail length,
    and the 32-byte stripes), a few nulls in each column."""

    def text() -> str:
        return "".join(rng.choice('az09é€😀 ,"\\') for _ in range(rng.randrange(0, 24)))

    columns: dict[str, list[Any]] = {
        "s": [text() for _ in range(n)],
        "i": [rng.randrange(-(2**31), 2**31) for _ in range(n)],
        "l": [rng.randrange(-(2**63), 2**63) for _ in range(n)],
        "b": [rng.random() < 0.5 for _ in range(n)],
        "d": [dt.date(1800, 1, 1) + dt.timedelta(days=rng.randrange(0, 120_000)) for _ in range(n)],
        "y": [rng.randrange(-128, 128) for _ in range(n)],
        "h": [rng.randrange(-(2**15), 2**15) for _ in range(n)],
    }
    columns["s"][:71] = ["x" * k for k in range(71)]
    for values in columns.values():
        for i in rng.sample(range(n), 5):
            values[i] = None
    types = {"s": pa.string(), "i": pa.int32(), "l": pa.int64(), "b": pa.bool_()}
    types |= {"d": pa.date32(), "y": pa.int8(), "h": pa.int16()}
    return pa.table({c: pa.array(v, types[c]) for c, v in columns.items()})


def test_driver_identities_are_sparks(spark: Any) -> None:
    rng = random.Random(11)
    keys = _keys(rng, 400)
    schema = T.StructType([T.StructField(c, t) for c, t in SPARK_TYPES.items()])
    df = arrow_frame(spark, keys, schema)
    for salt in [(rng.getrandbits(63), -rng.getrandbits(63)), (rng.getrandbits(63), -1)]:
        for dims in [list(SPARK_TYPES), ["s"], ["b", "d"], ["y", "h", "i", "l"], ["s", "s"]]:
            got = driver_cell_ids(keys, dims, salt)
            spark_ids = to_arrow(df.selectExpr(cell_id(dims, salt)))
            assert got.column(CELL_ID).to_pylist() == spark_ids.column(CELL_ID).to_pylist(), dims
    # control: the comparison tells identities apart (another salt, another column order)
    other_salt = driver_cell_ids(keys, ["s", "i"], (salt[0] + 1, salt[1]))
    swapped = driver_cell_ids(keys.select(["i", "s"]), ["i", "s"], salt)
    reference = driver_cell_ids(keys, ["s", "i"], salt).column(CELL_ID).to_pylist()
    assert other_salt.column(CELL_ID).to_pylist() != reference
    assert swapped.column(CELL_ID).to_pylist() != reference


def weak_identities(monkeypatch: Any) -> None:
    """Cell identities of one bit, in Spark and on the driver alike: among three or more cells
    two always share one, as 64-bit identities do with a chance of about cells^2 / 2^65."""

    def spark_id(dims: Any, salt: Any) -> str:
        strong = sql.keyed_hash(salt, [sql.name(d) for d in dims])
        return sql.aliased(f"({strong}) & 1", CELL_ID)

    def driver_ids(rows: pa.Table, dims: Any, salt: Any) -> pa.Table:
        table = driver_cell_ids(rows, dims, salt)
        weak = pc.bit_wise_and(table.column(CELL_ID), 1)
        return table.set_column(table.schema.get_field_index(CELL_ID), CELL_ID, weak)

    monkeypatch.setattr(cells_module, "cell_id", spark_id)
    monkeypatch.setattr(release_module, "driver_cell_ids", driver_ids)


WAYS = {  # partitions, driver limit
    "data cells, driver": ({"type": "private", "strategy": "laplace"}, None),
    "data cells, Spark": ({"type": "private", "strategy": "laplace"}, 0),
    "declared cells, driver": ({"type": "private", "strategy": "laplace"}, None),
    "public keys, driver": ({"type": "public", "keys": "cross_product"}, None),
    "public keys, Spark": ({"type": "public", "keys": "cross_product"}, 0),
    "public keys, levels": ({"type": "public", "keys": "cross_product"}, None),
}


@pytest.mark.parametrize("way", list(WAYS))
def test_cells_sharing_an_identity_stop_the_release_before_any_noise_is_drawn(
    spark: Any, monkeypatch: Any, way: str
) -> None:
    """Two cells that share an identity would be bounded, aggregated and noised as one cell and
    released under both names. Every set of keys is checked before it meets the cells, on the
    driver and in Spark's way: the release stops with RerunError. Control: without the checks,
    the same release hands out a merged cell's counts under two names (counts no cell has)."""
    df = spark.range(60).select(
        F.col("id").alias("pid"), (F.col("id") % 6).cast("string").alias("g"), F.lit(1.0).alias("v")
    )  # six cells of ten units each
    partitions, limit = WAYS[way]
    domains = {"g": [str(i) for i in range(6)]} if "data" not in way else {}
    doc = base_spec(domains=domains, budget={"epsilon": 20.0, "delta": 1e-6})
    table = doc["tables"][0]
    table["partitions"] = partitions | ({"pre_threshold": 1} if "public" not in way else {})
    table["metrics"] = ["count"]
    if "levels" in way:  # the total and the cells, made consistent; always noised
        table["levels"] = [[]]
    spec = parse_spec(doc)
    t = plan_release(spec).tables[0]
    if limit is not None:
        monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", limit)
    weak_identities(monkeypatch)

    def run() -> Any:
        keys = public_keys(spark, spec, t.table, df)
        candidates = candidate_cells(spec, t.table, df)
        assert (candidates is not None) == (way == "declared cells, driver")
        if "levels" in way:
            released = table_frames(spec, t, df, Secrets.new(), keys)["t"]
        else:
            released = release_table(df, t, "pid", Secrets.new(), keys, True, False, candidates)
        return sorted(r["count"] for r in released.collect())  # safe: made-up data

    with pytest.raises(RerunError, match=r"share a cell identity.*Run it again"):
        run()
    monkeypatch.setattr(release_module, "require_distinct", lambda keys, table: keys)
    monkeypatch.setattr(release_module, "require_distinct_frame", lambda keys, table: keys)
    try:
        counts = run()
    except InternalError:  # the driver's own consistency check caught the merge instead
        assert way == "data cells, driver"
        return
    assert len(counts) == 6 and any(c >= 15 for c in counts)  # merged cells, released twice
