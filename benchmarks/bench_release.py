"""Release speed against plain Spark on the same data, in one process (not a test).

For each N it generates N rows of demo microdata (Parquet, written by Spark), then times, best of
``--repeats``:

* plain:   ``groupBy(cell).agg(count, sum(clamped income))``;
* floor:   the same after ``repartition(person_id)``: the least any per-person bounding costs;
* release: the dprelease table (bounding L0=1, Linf=1 by salted hash, aggregation, private
           partition selection, keyed exact noise, post-processing) for the same cells;
* checks:  the input checks pass that a release runs first (nulls, NaN/inf, empty).

and, to show where the release's fixed costs go, the same release on a DataFrame built once
(``prebuilt``: without building and analysing the plan, about 20 DataFrame operations) and
without noise (``no_noise``: the test mode, without the Python stage that draws the noise).

Every plan ends in Spark's ``noop`` sink, so all of them compute everything and write nothing.
Prints a table with the ratios and writes JSON to ``benchmarks/results/``.

    python benchmarks/bench_release.py --rows 1000000 10000000
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from benchmarks.results_file import save_results  # noqa: E402
from pipelines.demo_data import demo_microdata  # noqa: E402
from pipelines.plan import plan_release  # noqa: E402
from pipelines.release import Secrets, release_table  # noqa: E402
from pipelines.spec import parse_spec  # noqa: E402
from pipelines.validation import validate_input  # noqa: E402

CELL = ["state", "county", "age_group", "sex"]
UPPER = 250_000.0


def spec_doc() -> dict[str, object]:
    return {
        "input": {"path": "bench", "privacy_unit": "person_id"},
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "output": {"path": "unused"},
        "noise": "laplace",
        "tables": [
            {
                "name": "bench",
                "dimensions": CELL,
                "partitions": {"type": "private", "strategy": "laplace"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["count", {"sum": "income", "lower": 0, "upper": UPPER}],
            }
        ],
    }


def sink(df: DataFrame) -> None:
    df.write.format("noop").mode("overwrite").save()


def best_of(repeats: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plain(df: DataFrame) -> DataFrame:
    clamped = F.least(F.greatest(F.col("income"), F.lit(0.0)), F.lit(UPPER))
    return df.groupBy(*CELL).agg(F.count(F.lit(1)).alias("n"), F.sum(clamped).alias("s"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=16)
    ap.add_argument("--driver-memory", default="8g")
    args = ap.parse_args()

    spark = (
        SparkSession.builder.master(args.master)
        .appName("dprelease-bench")
        .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spec = parse_spec(spec_doc())
    tplan = plan_release(spec).tables[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="dprelease-bench-") as tmp:
        for n in args.rows:
            path = str(Path(tmp) / f"rows{n}")
            start = time.perf_counter()
            demo_microdata(spark, n).write.parquet(path)
            gen = time.perf_counter() - start
            df = spark.read.parquet(path)
            secrets = Secrets.new()
            sink(plain(df))  # warm-up: JIT, file listing, Python workers
            sink(release_table(df, tplan, "person_id", secrets, None))
            t_plain = best_of(args.repeats, lambda df=df: sink(plain(df)))
            t_floor = best_of(args.repeats, lambda df=df: sink(plain(df.repartition("person_id"))))
            t_release = best_of(
                args.repeats,
                lambda df=df, s=secrets: sink(release_table(df, tplan, "person_id", s, None)),
            )
            built = release_table(df, tplan, "person_id", secrets, None)
            quiet = release_table(df, tplan, "person_id", secrets, None, add_noise_=False)
            sink(quiet)
            t_built = best_of(args.repeats, lambda d=built: sink(d))
            t_quiet = best_of(args.repeats, lambda d=quiet: sink(d))
            validate_input(df, spec)  # warm-up: great-expectations import and first context
            t_checks = best_of(args.repeats, lambda df=df: validate_input(df, spec))
            row = {
                "rows": n,
                "generate_s": round(gen, 2),
                "plain_s": round(t_plain, 2),
                "floor_s": round(t_floor, 2),
                "release_s": round(t_release, 2),
                "prebuilt_s": round(t_built, 2),
                "no_noise_s": round(t_quiet, 2),
                "checks_s": round(t_checks, 2),
                "release_over_floor": round(t_release / t_floor, 2),
                "release_over_plain": round(t_release / t_plain, 2),
                "release_with_checks_over_floor": round((t_release + t_checks) / t_floor, 2),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        f"{'rows':>12} {'plain s':>8} {'floor s':>8} {'release s':>10} {'checks s':>9} "
        f"{'rel/floor':>9} {'rel/plain':>9} {'(rel+chk)/floor':>15} {'prebuilt s':>10} "
        f"{'no-noise s':>10}"
    )
    for r in results:
        print(
            f"{r['rows']:>12,} {r['plain_s']:>8} {r['floor_s']:>8} {r['release_s']:>10} "
            f"{r['checks_s']:>9} {r['release_over_floor']:>9} {r['release_over_plain']:>9} "
            f"{r['release_with_checks_over_floor']:>15} {r['prebuilt_s']:>10} {r['no_noise_s']:>10}"
        )
    save_results("release", {"args": vars(args), "results": results})
    spark.stop()


if __name__ == "__main__":
    main()
