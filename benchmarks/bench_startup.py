"""The console command's fixed cost: ``dprelease run`` of a one-table release on 1,000 rows
against a plain PySpark script doing the same Spark work (read the Parquet input, count per
cell, write Parquet) on the same data, each a fresh process (not a test).

Both start a local Spark session with the same settings (``--master local[2]``, the profile
``conf/spark/local.yaml``); the runs alternate, ``--repeats`` times each, and each side's median
wall time is kept. The difference is what a release costs beyond Spark itself on data too small
to matter: imports, the plan, validation, the ledger-free preflight, the noise, the checks of the
written table and the manifest. Prints the table and writes JSON to ``benchmarks/results/``.

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
input: {path: %(data)s, format: parquet, privacy_unit: person_id}
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
        (work / "spec.yaml").write_text(SPEC % {"data": data, "out": work / "out"})
        plain_times: list[float] = []
        release_times: list[float] = []
        for i in range(args.repeats):
            plain = [sys.executable, "plain.py", str(data), str(work / f"plain{i}")]
            release = [exe, "run", "spec.yaml", "--release-id", f"r{i}", "--master", MASTER]
            plain_s = timed([*plain, str(PROFILE), MASTER], work)
            release_s = timed([*release, "--spark-profile", str(PROFILE)], work)
            plain_times.append(plain_s)
            release_times.append(release_s)
            print(f"round {i + 1}: plain {plain_s:.2f} s, dprelease run {release_s:.2f} s")
    plain_med = statistics.median(plain_times)
    release_med = statistics.median(release_times)
    fixed = release_med - plain_med
    print(f"\n{'':24}{'median s':>10}")
    print(f"{'plain PySpark script':24}{plain_med:>10.2f}")
    print(f"{'dprelease run':24}{release_med:>10.2f}")
    print(f"fixed cost of the console command: {fixed:.2f} s ({release_med / plain_med:.2f}x)")
    path = save_results(
        "startup",
        {
            "rows": args.rows,
            "repeats": args.repeats,
            "plain_s": plain_times,
            "release_s": release_times,
            "fixed_cost_s": fixed,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
