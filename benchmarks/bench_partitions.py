"""Shuffle partitions without a profile: the level tables of ``conf/census_suite.yaml`` released
in a local[2] session under Spark's own defaults (200 shuffle partitions, adaptive execution
not allowed to coalesce a cached plan's shuffles), under the settings a session dprelease starts
gets without a profile (jobs.session.DEFAULTS, still 200 shuffle partitions), and with the
profile ``conf/spark/local.yaml`` (8 partitions). Not a test.

Each setting runs in a fresh process; it releases the suite ``--repeats`` times in one session
and keeps the first (cold) and the median of the others (warm) wall time.

    python benchmarks/bench_partitions.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import save_results  # noqa: E402

SETTINGS = {
    "spark": "Spark's defaults (200 partitions)",
    "dprelease": "dprelease's defaults, no profile (200)",
    "profile": "profile conf/spark/local.yaml (8)",
}


def child(setting: str, data: str, out: str, repeats: int) -> None:
    import yaml
    from pyspark.sql import SparkSession

    from jobs.config import load_spec
    from jobs.runner import run_release
    from jobs.session import DEFAULTS

    builder = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
    conf: dict[str, str] = {}
    if setting in ("dprelease", "profile"):
        conf.update(DEFAULTS)
    if setting == "profile":
        profile = yaml.safe_load((ROOT / "conf" / "spark" / "local.yaml").read_text())["conf"]
        conf.update({k: str(v) for k, v in profile.items()})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spec = load_spec(ROOT / "conf" / "census_suite.yaml", input_path=data, output_path=out)
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        run_release(spark, spec, f"{setting}-{i}", warn=False)
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))
    spark.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("SETTING", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, repeats=args.repeats)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        data = str(Path(tmp) / "microdata")
        exe = str(Path(sys.executable).parent / "dprelease")
        gen = [exe, "generate-demo", "--rows", str(args.rows), "--output", data]
        subprocess.run([*gen, "--master", "local[2]"], check=True, capture_output=True)
        for setting, label in SETTINGS.items():
            cmd = [sys.executable, __file__, "--repeats", str(args.repeats)]
            cmd += ["--child", setting, data, str(Path(tmp) / "out")]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds = json.loads(done.stdout.strip().splitlines()[-1])
            warm = statistics.median(seconds[1:]) if len(seconds) > 1 else None
            rows.append({"setting": label, "cold": seconds[0], "warm": warm, "all": seconds})
            print(f"{label}: {', '.join(f'{s:.1f}' for s in seconds)} s", flush=True)
    print(f"\nconf/census_suite.yaml (5 level tables) on {args.rows:,} rows, local[2]:")
    print(f"{'setting':42}{'cold s':>8}{'warm s':>8}")
    for r in rows:
        warm = f"{r['warm']:8.1f}" if r["warm"] is not None else f"{'-':>8}"
        print(f"{r['setting']:42}{r['cold']:8.1f}{warm}")
    print(f"results: {save_results('partitions', {'rows': args.rows, 'runs': rows})}")


if __name__ == "__main__":
    main()
