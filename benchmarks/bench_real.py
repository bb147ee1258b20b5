"""Accuracy of the real-data suites (conf/real_cps.yaml, conf/real_nlswork.yaml).

Releases each spec several times through the Python API (nothing written, no ledger) and prints,
per output table and metric, the median relative error of released cells against the exact,
unbounded counts of the extract, for cells of at least 20, 100 and 1,000. The error includes the
bias of contribution bounding (none in these specs: every unit's rows fit the bounds) and of making
counts consistent, non-negative integers.

Needs the optional extra (``pip install -e '.[real]'``). Not a test:
``python benchmarks/bench_real.py [--trials 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from pyspark.sql import SparkSession  # noqa: E402

from jobs.api import release_dataframes  # noqa: E402
from jobs.config import load_spec  # noqa: E402
from jobs.real_data import write  # noqa: E402

SIZES = (20, 100, 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.python.sql.dataFrameDebugging.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dprelease-real-") as tmp:
        for name in ("cps", "nlswork"):
            data = Path(tmp) / name
            write(name, data)
            truth = pd.read_parquet(data)
            spec = load_spec(ROOT / "conf" / f"real_{name}.yaml", input_path=str(data))
            unit = spec.input.privacy_unit
            errors: dict[tuple[str, str], list[pd.DataFrame]] = {}
            for _ in range(args.trials):
                result = release_dataframes(spec, spark)
                for table in spec.tables:
                    for out_name, dims in table.outputs:
                        released = result.tables[out_name].toPandas()  # safe: released tables
                        for m in table.metrics:
                            if m.kind not in ("count", "privacy_unit_count"):
                                continue
                            group = (
                                truth.groupby(list(dims)) if dims else truth.groupby(lambda _: 0)
                            )
                            exact = (
                                group[unit].nunique()
                                if m.kind == "privacy_unit_count"
                                else group.size()
                            ).rename("true")
                            if dims:
                                both = released.set_index(list(dims)).join(exact, how="inner")
                            else:
                                both = released.assign(true=float(exact.iloc[0]))
                            errors.setdefault((out_name, m.output_name), []).append(
                                pd.DataFrame(
                                    {
                                        "true": both["true"],
                                        "rel": (both[m.output_name] - both["true"]).abs()
                                        / both["true"],
                                    }
                                )
                            )
            for (out_name, metric), frames in errors.items():
                e = pd.concat(frames)
                row = {"data": name, "table": out_name, "metric": metric}
                for size in SIZES:
                    cells = e[e["true"] >= size]
                    row[f"cells>={size}"] = int(len(cells) / args.trials)
                    row[f"median_rel>={size}"] = (
                        round(float(np.median(cells["rel"])), 4) if len(cells) else None
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    for r in rows:
        parts = ", ".join(
            f">= {s}: {r[f'median_rel>={s}']} ({r[f'cells>={s}']} cells)"
            for s in SIZES
            if r[f"median_rel>={s}"] is not None
        )
        print(f"{r['data']:>8} {r['table']:>50} {r['metric']:>18}  median relative error {parts}")
    spark.stop()


if __name__ == "__main__":
    main()
