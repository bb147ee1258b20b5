"""Time of a table suite against its detailed table released alone, on the same data (not a test).

Generates demo microdata (Parquet), then times, from the plan to the last written file:

* alone:  the county x sex x age x race table (160 counties x 84 cells = 13,440 public keys),
          no margins, one written table;
* chain:  the same table with levels (nation, states, counties), four written tables;
* suite:  the census conf's suite (the same cells measured with sex x age, race and total
          margins at the nation, the states and the counties: 12 measurements, least squares,
          12 written tables), on the driver's way (the default at this size);
* alone on Spark, suite on Spark: the same two forced through Spark's way (noise on the
          executors; the suite's level-by-level passes), the way tables above 100,000 cells
          take: their ratio is what a large suite costs over its detailed table.

Each kind runs ``--warmup`` times untimed, then ``--repeats`` rounds in turn; the best time of
each is kept. Prints seconds and the ratio to ``alone`` (to ``alone on Spark`` for the kinds
forced through Spark's way); JSON goes to ``benchmarks/results/``.

    python benchmarks/bench_suite.py --rows 1000000
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from pyspark.sql import SparkSession  # noqa: E402

from benchmarks.results_file import print_table, save_results  # noqa: E402
from jobs.runner import public_keys, table_frames  # noqa: E402
from pipelines import noise as noise_module  # noqa: E402
from pipelines.demo_data import demo_microdata  # noqa: E402
from pipelines.plan import plan_release  # noqa: E402
from pipelines.release import Secrets  # noqa: E402
from pipelines.spec import parse_spec  # noqa: E402


def docs(path: str) -> dict[str, dict[str, Any]]:
    conf = yaml.safe_load((ROOT / "conf" / "census_suite.yaml").read_text())
    conf["input"]["path"] = path
    suite = next(t for t in conf["tables"] if "geography" in t)
    counties = suite["partitions"]["keys"]
    d = conf["domains"]
    cells = [
        [s, c, x, a, r]
        for s, c in counties
        for x in d["sex"]
        for a in d["age_group"]
        for r in d["race"]
    ]
    alone = {
        "name": "alone",
        "dimensions": suite["dimensions"],
        "partitions": {"type": "public", "keys": cells},
        "bounds": suite["bounds"],
        "metrics": suite["metrics"],
    }
    chain = {
        **copy.deepcopy(alone),
        "name": "chain",
        "levels": [[], ["state"], ["state", "county"]],
    }
    out = {}
    for name, table in (("alone", alone), ("chain", chain), ("suite", suite)):
        doc = copy.deepcopy(conf)
        doc["tables"] = [table]
        out[name] = doc
    return out


def release(spark: SparkSession, doc: dict[str, Any], df: Any, out: str) -> None:
    spec = parse_spec(doc)
    (plan,) = plan_release(spec).tables
    keys = public_keys(spark, spec, plan.table, df)
    for name, frame in table_frames(spec, plan, df, Secrets.new(), keys).items():
        frame.write.mode("overwrite").parquet(os.path.join(out, name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "6g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    work = tempfile.mkdtemp(prefix="dprelease-bench-suite-")
    data = os.path.join(work, "data")
    demo_microdata(spark, args.rows).write.parquet(data)
    df = spark.read.parquet(data)
    specs = docs(data)
    limit = noise_module.DRIVER_MAX_CELLS

    def on_spark(kind: str) -> None:
        noise_module.DRIVER_MAX_CELLS = 0
        try:
            release(spark, specs[kind], df, os.path.join(work, f"{kind}-spark"))
        finally:
            noise_module.DRIVER_MAX_CELLS = limit

    kinds: dict[str, Callable[[], None]] = {
        "alone": lambda: release(spark, specs["alone"], df, os.path.join(work, "alone")),
        "chain": lambda: release(spark, specs["chain"], df, os.path.join(work, "chain")),
        "suite": lambda: release(spark, specs["suite"], df, os.path.join(work, "suite")),
        "alone on Spark": lambda: on_spark("alone"),
        "suite on Spark": lambda: on_spark("suite"),
    }
    best = {k: float("inf") for k in kinds}
    for _ in range(args.warmup):
        for run in kinds.values():
            run()
    for _ in range(args.repeats):
        for name, run in kinds.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    rows = [
        {
            "kind": k,
            "seconds": round(v, 2),
            "vs_alone": round(v / best["alone on Spark" if "Spark" in k else "alone"], 2),
        }
        for k, v in best.items()
    ]
    for r in rows:
        print(json.dumps({"rows": args.rows, **r}), flush=True)
    print()
    print(f"{args.rows:,} demo rows, best of {args.repeats}")
    print_table(
        rows, [("kind", "kind", ">15"), ("seconds", "seconds", ">8"), ("/ alone", "vs_alone", ">8")]
    )
    save_results("suite", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
