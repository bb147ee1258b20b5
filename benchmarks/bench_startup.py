"""The console command's fixed cost: ``dprelease run`` of a one-table release on 1,000 rows
against a plain PySpark script doing the same Spark work (read the Parquet input, count per
cell, write Parquet) on the same data, each a fresh process (not a test).

Both start a local Spark session with the same settings (``--master local[2]``, the profile
``conf/spark/local.yaml``); the runs alternate, ``--repeats`` times each, and each side's median
wall time is kept. The difference is what a release costs beyond Spark itself on data too small
to matter: imports, the plan, validation, the ledger-free preflight, the noise, the checks of the
written table and the manifest. The release runs with each ``input.validator``
(great-expectations, and Spark alone). Prints the table and writes JSON to ``benchmarks/results/``.

    python benchmarks/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import save_results  # noqa: E402

PROFILE = ROOT / "conf" / "spark" / "local.yaml"
MASTER = "local[2]"
VALIDATORS = ("great_expectations", "spark")

PLAIN = """
import sys, yaml
from pyspark.sql import SparkSession
conf = yaml.safe_load(open(sys.argv[3]))["conf"]
builder = SparkSession.builder.master(sys.argv[4]).appName("plain")
for k, v in conf.items():
    builder = builder.config(k, str(v))
spark = builder.getOrCreate()
spark.read.parquet(sys.argv[1]).groupBy("sex").count().write.parquet(sys.argv[2])
spark.stop()
"""

SPEC = """
input: {path: %(data)s, format: parquet, privacy_unit: person_id, validator: %(validator)s}
budget: {epsilon: 1.0}
output: {path: %(out)s, format: parquet}
domains: {sex: [F, M]}
tables:
  - name: persons_by_sex
    dimensions: [sex]
    partitions: {type: public, keys: cross_product}
    bounds: {max_partitions: 1, max_rows_per_partition: 1}
    metrics: [count]
"""


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "dprelease")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        data = work / "microdata"
        gen = [exe, "generate-demo", "--rows", str(args.rows), "--output", str(data)]
        timed([*gen, "--master", MASTER, "--spark-profile", str(PROFILE)], work)
        (work / "plain.py").write_text(PLAIN)
        for validator in VALIDATORS:
            spec = SPEC % {"data": data, "out": work / "out", "validator": validator}
            (work / f"{validator}.yaml").write_text(spec)
        times: dict[str, list[float]] = {kind: [] for kind in ("plain", *VALIDATORS)}
        for i in range(args.repeats):
            plain = [sys.executable, "plain.py", str(data), str(work / f"plain{i}")]
            times["plain"].append(timed([*plain, str(PROFILE), MASTER], work))
            for validator in VALIDATORS:
                release = [exe, "run", f"{validator}.yaml", "--release-id", f"{validator}-{i}"]
                run = [*release, "--master", MASTER, "--spark-profile", str(PROFILE)]
                times[validator].append(timed(run, work))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    medians = {kind: statistics.median(v) for kind, v in times.items()}
    print(f"\n{'':46}{'median s':>10}{'fixed cost s':>14}")
    print(f"{'plain PySpark script':46}{medians['plain']:>10.2f}{'':>14}")
    for validator in VALIDATORS:
        label = f"dprelease run (validator: {validator})"
        fixed = medians[validator] - medians["plain"]
        print(f"{label:46}{medians[validator]:>10.2f}{fixed:>14.2f}")
    path = save_results(
        "startup",
        {
            "rows": args.rows,
            "repeats": args.repeats,
            "seconds": times,
            "fixed_cost_s": {v: medians[v] - medians["plain"] for v in VALIDATORS},
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
