"""Cell identities computed on the driver are Spark's, bit for bit."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import types as T

from dp_ops.xxhash64 import hash_bytes
from pipelines.cells import cell_ids, driver_cell_ids

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
    df = spark.createDataFrame(keys, schema)
    salt = (rng.getrandbits(63), -rng.getrandbits(63), rng.getrandbits(63), -1)
    for dims in [list(SPARK_TYPES), ["s"], ["b", "d"], ["y", "h", "i", "l"], ["s", "s"]]:
        got = driver_cell_ids(keys, dims, salt)
        spark_ids = df.selectExpr(*cell_ids(dims, salt)).toArrow()
        for half in ("_c1", "_c2"):
            assert got.column(half).to_pylist() == spark_ids.column(half).to_pylist(), dims
    # control: the comparison tells identities apart (another salt, another column order)
    other_salt = driver_cell_ids(keys, ["s", "i"], (salt[0] + 1, *salt[1:]))
    swapped = driver_cell_ids(keys.select(["i", "s"]), ["i", "s"], salt)
    reference = driver_cell_ids(keys, ["s", "i"], salt).column("_c1").to_pylist()
    assert other_salt.column("_c1").to_pylist() != reference
    assert swapped.column("_c1").to_pylist() != reference
