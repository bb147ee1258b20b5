"""Release speed against plain Spark on the same data, in one process (not a test).

For each workload and N it writes N rows of microdata as Parquet, then times the kinds below.
Workloads: ``demo``, the project's generator (``pipelines.demo_data``: persons of one to a few
rows, cells inside declared domains); ``shared``, the generator the peers' benchmarks share
(``benchmarks/shared_workload.py``: heavy persons of 1,000 rows, about 10^5 cells at 10^7 rows,
no declared domains, income bounded at 200,000). Kinds:

* plain:    ``groupBy(cell).agg(count, sum(clamped income))``;
* floor:    the same after ``repartition(person_id)``: the least any per-person bounding costs;
* release:  the dprelease table (bounding L0=1, Linf=1 by salted hash, aggregation, private
            partition selection, keyed exact noise, post-processing) for the same cells, from
            building the plan to the last row;
* public:   the same release with public partitions instead of private selection: the cells of
            the data given as a key list (as a census release gives its geography file), so no
            scan for the cell keys and no threshold; the keys stay on the driver (their
            identities computed by a small job alongside; no join or shuffle of the keys in
            Spark) and every key is released;
* domains:  (demo only) the same release (private selection) with every dimension's domain
            declared, as the demo data's codes are: selection chooses among the declared cells on
            the driver, so no scan for the cell keys (validation keeps every row inside the
            domains);
* no_noise: the same release in the test mode without noise: the release minus this is what
            drawing the noise costs;
* bounding: the release's per-person work alone: bounding and the per-cell aggregation, cells
            by identity (no dimension values, no selection, no noise);
* keys:     the release's second scan alone: the distinct dimension values of the input, which
            private selection collects alongside the cells, to name the selected ones;
* checks:   the input checks pass that a release runs first (nulls, NaN/inf, empty).

The JVM gets faster over the first runs of each plan (JIT), unevenly across plans, so every kind
runs ``--warmup`` times untimed, then ``--repeats`` timed rounds run the kinds in turn and each
kind's best time is kept. A plan can run slower right after some other plans, so each round
starts one kind later than the one before: no kind always follows the same one.

Every plan ends in Spark's ``noop`` sink, so all of them compute everything and write nothing.
Every run draws new secrets (salt and noise key) and Spark's cache is cleared after it, untimed: a
release keeps computed frames, and a run with the same secrets would otherwise find the frames of
the run before in the cache (the figures printed before 2026-12-07 had that flaw: release and
bounding below the floor).
Prints a table with the ratios and writes JSON to ``benchmarks/results/``.

One process's ratios also depend on the process: the same code in a new JVM can run one plan
slower against another (bounding alone took 0.70 to 1.11 times the floor at 10^6 rows in four
runs of the same bounding code), which best-of-rounds inside the process does not remove.
``--processes K`` runs the whole benchmark in K fresh processes, one after the other, and prints
each ratio's median over them with its range.

A run at 10^3 rows, where reading and shuffling the data costs next to nothing, measures what each
plan costs whatever the data: building and planning the query, scheduling its Spark jobs, and
(for the release) the noise step and the write of the noisy table. Those fixed costs are most of
the difference between the release and the floor at 10^6 rows (the ``rel-floor`` column).

    python benchmarks/bench_release.py --rows 1000 1000000 10000000
    python benchmarks/bench_release.py --rows 1000000 --processes 5
    python benchmarks/bench_release.py --workloads shared --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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

from benchmarks.results_file import print_table, save_results  # noqa: E402
from benchmarks.shared_workload import write_shared  # noqa: E402
from pipelines import noise  # noqa: E402
from pipelines.cells import cell_keys  # noqa: E402
from pipelines.demo_data import AGE_GROUPS, COUNTIES, SEXES, STATES, demo_microdata  # noqa: E402
from pipelines.partitions import declared_cells, inline_keys  # noqa: E402
from pipelines.plan import plan_release  # noqa: E402
from pipelines.release import Secrets, bounded_aggregates, release_table  # noqa: E402
from pipelines.spec import parse_spec  # noqa: E402
from pipelines.validation import validate_input  # noqa: E402

CELL = ["state", "county", "age_group", "sex"]
DOMAINS = {"state": STATES, "county": COUNTIES, "age_group": AGE_GROUPS, "sex": SEXES}
UPPER = {"demo": 250_000.0, "shared": 200_000.0}
"""The income bound of each workload's sum (the shared workload's is the peers' benchmarks')."""


def spec_doc(upper: float, partitions: dict[str, object] | None = None) -> dict[str, object]:
    """The benchmark's release: private selection by default, else ``partitions``."""
    return {
        "input": {"path": "bench", "privacy_unit": "person_id"},
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "output": {"path": "unused"},
        "noise": "laplace",
        "tables": [
            {
                "name": "bench",
                "dimensions": CELL,
                "partitions": partitions or {"type": "private", "strategy": "laplace"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["count", {"sum": "income", "lower": 0, "upper": upper}],
            }
        ],
    }


def sink(df: DataFrame) -> None:
    df.write.format("noop").mode("overwrite").save()


def best_in_turns(
    kinds: dict[str, Callable[[], None]],
    warmup: int,
    repeats: int,
    reset: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Each kind's best time over ``repeats`` rounds that run every kind once, in turn, after
    ``warmup`` untimed rounds; round ``r`` starts at kind ``r`` (see the module docstring).
    ``reset`` runs, untimed, after every run: no run may find what another one kept."""
    for _ in range(warmup):
        for fn in kinds.values():
            fn()
            reset()
    best = {name: float("inf") for name in kinds}
    order = list(kinds.items())
    for r in range(repeats):
        shift = r % len(order)
        for name, fn in order[shift:] + order[:shift]:
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            reset()
    return best


def plain(df: DataFrame, upper: float) -> DataFrame:
    clamped = F.least(F.greatest(F.col("income"), F.lit(0.0)), F.lit(upper))
    return df.groupBy(*CELL).agg(F.count(F.lit(1)).alias("n"), F.sum(clamped).alias("s"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000, 1_000_000, 10_000_000])
    ap.add_argument(
        "--workloads",
        nargs="+",
        choices=["demo", "shared"],
        default=["demo", "shared"],
        help="demo: the project's generator; shared: the peers' (benchmarks/shared_workload.py)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--shuffle-partitions", type=int, default=16)
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument(
        "--processes", type=int, default=1, help="run in this many fresh processes; print medians"
    )
    ap.add_argument(
        "--driver-max-cells",
        type=int,
        default=noise.DRIVER_MAX_CELLS,
        help="the release's driver limit (pipelines.noise.DRIVER_MAX_CELLS), to compare limits",
    )
    args = ap.parse_args()
    noise.DRIVER_MAX_CELLS = args.driver_max_cells
    if args.processes > 1:
        across_processes(args)
        return

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
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    with tempfile.TemporaryDirectory(prefix="dprelease-bench-") as tmp:
        for workload in args.workloads:
            for n in args.rows:
                row = measure(spark, workload, n, str(Path(tmp) / f"{workload}{n}"), args)
                results.append(row)
                print(json.dumps(row), flush=True)
    print()
    print_table(
        results,
        [
            ("workload", "workload", "<8"),
            ("rows", "rows", ">12,"),
            ("cells", "cells", ">8,"),
            ("plain s", "plain_s", ">8"),
            ("floor s", "floor_s", ">8"),
            ("release s", "release_s", ">10"),
            ("checks s", "checks_s", ">9"),
            ("rel/floor", "release_over_floor", ">9"),
            ("rel/plain", "release_over_plain", ">9"),
            ("floor/plain", "floor_over_plain", ">11"),
            ("rel-floor s", "release_minus_floor_s", ">11"),
            ("(rel+chk)/floor", "release_with_checks_over_floor", ">15"),
            ("public s", "public_s", ">8"),
            ("pub/floor", "public_over_floor", ">9"),
            ("domains s", "domains_s", ">9"),
            ("dom/floor", "domains_over_floor", ">9"),
            ("no-noise s", "no_noise_s", ">10"),
            ("bounding s", "bounding_s", ">10"),
            ("bnd/floor", "bounding_over_floor", ">9"),
            ("keys s", "keys_s", ">6"),
        ],
    )
    save_results("release", {"args": vars(args), "results": results})
    spark.stop()


def generate(spark: SparkSession, workload: str, n: int, path: str) -> float:
    """Write ``n`` rows of ``workload`` to ``path``; the seconds it took."""
    start = time.perf_counter()
    if workload == "demo":
        demo_microdata(spark, n).write.parquet(path)
    else:
        write_shared(n, path)
    return time.perf_counter() - start


def measure(
    spark: SparkSession, workload: str, n: int, path: str, args: argparse.Namespace
) -> dict[str, object]:
    """One row of the printed table: every kind on ``n`` rows of ``workload``."""
    gen = generate(spark, workload, n, path)
    upper = UPPER[workload]
    spec = parse_spec(spec_doc(upper))
    tplan = plan_release(spec).tables[0]
    df = spark.read.parquet(path)
    # public keys for the "public" kind: the data's cells, read untimed (a key file's role)
    cells = [list(r) for r in df.select(*CELL).distinct().collect()]
    public_plan = plan_release(
        parse_spec(spec_doc(upper, {"type": "public", "keys": cells}))
    ).tables[0]
    public_keys = inline_keys(spark, CELL, cells, df.schema)

    # Every run draws new secrets, as every release does: a release keeps computed frames
    # (pipelines.persistence), and a run with the same salt and key would find them in Spark's
    # cache and skip the work; the cache is also cleared after every run (best_in_turns' reset).
    def release(df: DataFrame = df, noise: bool = True) -> None:
        sink(release_table(df, tplan, "person_id", Secrets.new(), None, add_noise_=noise))

    kinds: dict[str, Callable[[], None]] = {
        "plain": lambda df=df: sink(plain(df, upper)),
        "floor": lambda df=df: sink(plain(df.repartition("person_id"), upper)),
        "release": release,
        "public": lambda df=df, p=public_plan, k=public_keys: sink(
            release_table(df, p, "person_id", Secrets.new(), k)
        ),
        "no_noise": lambda: release(noise=False),
        "bounding": lambda df=df: sink(bounded_aggregates(df, tplan, "person_id", Secrets.new())),
        "keys": lambda df=df: sink(cell_keys(df, CELL, Secrets.new().cell_salt)),
        "checks": lambda df=df: validate_input(df, spec),
    }
    if workload == "demo":  # the demo data's codes are its declared domains
        declared = declared_cells(list(DOMAINS.items()), df.schema)
        kinds["domains"] = lambda df=df, d=declared: sink(
            release_table(df, tplan, "person_id", Secrets.new(), None, candidates=d)
        )
    t = best_in_turns(kinds, args.warmup, args.repeats, spark.catalog.clearCache)
    row: dict[str, object] = {
        "workload": workload,
        "rows": n,
        "cells": len(cells),
        "generate_s": round(gen, 2),
        **{f"{name}_s": round(seconds, 2) for name, seconds in t.items()},
        "release_over_floor": round(t["release"] / t["floor"], 2),
        "release_over_plain": round(t["release"] / t["plain"], 2),
        "public_over_floor": round(t["public"] / t["floor"], 2),
        "floor_over_plain": round(t["floor"] / t["plain"], 2),
        # what the release costs beyond the floor; near-constant in N = a fixed cost
        "release_minus_floor_s": round(t["release"] - t["floor"], 2),
        "bounding_over_floor": round(t["bounding"] / t["floor"], 2),
        "release_with_checks_over_floor": round((t["release"] + t["checks"]) / t["floor"], 2),
    }
    if "domains" in t:
        row["domains_over_floor"] = round(t["domains"] / t["floor"], 2)
    return row


RATIOS = [
    "release_over_floor",
    "public_over_floor",
    "domains_over_floor",
    "bounding_over_floor",
    "floor_over_plain",
]


def across_processes(args: argparse.Namespace) -> None:
    """The benchmark in ``args.processes`` fresh processes in turn: each ratio's median and
    range over them, per workload and row count."""
    command = [sys.executable, __file__, "--rows", *map(str, args.rows)]
    command += ["--workloads", *args.workloads]
    flags = ["repeats", "warmup", "master", "shuffle_partitions", "driver_memory"]
    for flag in [*flags, "driver_max_cells"]:
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    runs: list[list[dict[str, object]]] = []
    for i in range(args.processes):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        shown = [{k: r.get(k) for k in ["workload", "rows", *RATIOS]} for r in rows]
        print(f"process {i + 1}: " + json.dumps(shown))
        runs.append(rows)
    summary = []
    for j, first in enumerate(runs[0]):
        row: dict[str, object] = {"workload": first["workload"], "rows": first["rows"]}
        for key in RATIOS:
            values = [float(run[j][key]) for run in runs if run[j].get(key) is not None]
            if values:
                row[key] = f"{statistics.median(values):.2f} ({min(values)}-{max(values)})"
        summary.append(row)
    print()
    print(f"medians over {args.processes} processes (range in brackets)")
    print_table(
        summary,
        [
            ("workload", "workload", "<8"),
            ("rows", "rows", ">12,"),
            ("rel/floor", "release_over_floor", ">18"),
            ("pub/floor", "public_over_floor", ">18"),
            ("dom/floor", "domains_over_floor", ">18"),
            ("bnd/floor", "bounding_over_floor", ">18"),
            ("floor/plain", "floor_over_plain", ">18"),
        ],
    )
    save_results("release-processes", {"args": vars(args), "processes": runs, "summary": summary})


if __name__ == "__main__":
    main()
