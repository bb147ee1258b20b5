"""Time of ``dprelease analyze``'s analysis against plain Spark on the same data (not a test).

Generates demo microdata (Parquet), then times, per kind, every table of ``conf/demo.yaml``:

* plain:   Spark's own aggregation of each table (count, distinct persons and the sum per
           cell, collected): the floor of any pass over the data;
* release: the DP release of each table (bounding, aggregation, selection, noise), written;
* analyze: the non-private analysis of each table (pipelines.analysis.analyze_table).

Each kind runs ``--warmup`` times untimed, then ``--repeats`` rounds in turn; the best time of
each is kept. Prints seconds and the ratio to ``plain``; JSON goes to ``benchmarks/results/``.

    python benchmarks/bench_analyze.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from benchmarks.results_file import print_table, save_results  # noqa: E402
from jobs.runner import public_keys, table_frames  # noqa: E402
from pipelines.analysis import analyze_table  # noqa: E402
from pipelines.demo_data import demo_microdata  # noqa: E402
from pipelines.plan import plan_release  # noqa: E402
from pipelines.release import Secrets  # noqa: E402
from pipelines.spec import ReleaseSpec, parse_spec  # noqa: E402


def plain(spec: ReleaseSpec, df: DataFrame) -> None:
    for t in spec.tables:
        columns = {m.column for m in t.metrics if m.column}
        aggs = [F.count(F.lit(1)), F.countDistinct(spec.input.privacy_unit)]
        aggs += [F.sum(c) for c in sorted(columns)]
        df.groupBy(*t.dimensions).agg(*aggs).collect()


def release(spark: SparkSession, spec: ReleaseSpec, df: DataFrame, out: str) -> None:
    for plan in plan_release(spec).tables:
        keys = public_keys(spark, spec, plan.table, df)
        for name, frame in table_frames(spec, plan, df, Secrets.new(), keys).items():
            frame.write.mode("overwrite").parquet(os.path.join(out, name))


def analyze(spec: ReleaseSpec, df: DataFrame) -> None:
    for i in range(len(spec.tables)):
        analyze_table(df, spec, i)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
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
    work = tempfile.mkdtemp(prefix="dprelease-bench-analyze-")
    data = os.path.join(work, "data")
    demo_microdata(spark, args.rows).write.parquet(data)
    df = spark.read.parquet(data)
    doc = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
    doc["input"]["path"] = data
    spec = parse_spec(doc)
    kinds: dict[str, Callable[[], None]] = {
        "plain": lambda: plain(spec, df),
        "release": lambda: release(spark, spec, df, os.path.join(work, "release")),
        "analyze": lambda: analyze(spec, df),
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
        {"kind": k, "seconds": round(v, 2), "vs_plain": round(v / best["plain"], 2)}
        for k, v in best.items()
    ]
    for r in rows:
        print(json.dumps({"rows": args.rows, **r}), flush=True)
    print()
    print(
        f"{args.rows:,} demo rows, the {len(spec.tables)} tables of conf/demo.yaml, "
        f"best of {args.repeats}"
    )
    print_table(
        rows, [("kind", "kind", ">8"), ("seconds", "seconds", ">8"), ("/ plain", "vs_plain", ">8")]
    )
    save_results("analyze", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
