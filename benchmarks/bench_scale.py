"""Release speed and driver memory as rows and cells grow, against plain Spark (not a test).

Two series, each size in a fresh driver process (so each process's memory peak is its own):

* rows: ``--rows`` rows of demo microdata generated on the fly by Spark (nothing written first;
  both plans generate the same rows), the table of ``bench_release.py``: cells of
  state x county x age group x sex, private partition selection, count and sum of income;
* cells: public keys from a Parquet key file of ``--cells`` block codes (a block-level
  geography), ``--cells-rows`` rows of two rows per person spread over the blocks, count and
  sum of income per block; every key is released.

For each size it times

* floor:    the plain aggregation after ``repartition(person_id)``, the least any per-person
            bounding costs (cells: then joined to the key file, the least releasing every key
            costs);
* release:  the released table (``pipelines.release.release_table``: bounding, aggregation,
            selection, noise, post-processing) computed into Spark's ``noop`` sink;
* run:      the whole release through ``jobs.runner.run_release`` as a job runs it: the input
            checks and validation (``validator: spark``), the table, the write of the released
            Parquet and the manifest. The floor writes nothing, so ``run/floor`` includes writing.

and reports the driver's peak memory: the driver JVM's peak resident memory (``VmHWM``), its
heap's peak after a garbage collection (sampled every half second: what the driver holds, not
garbage) and the Python process's peak resident memory. The driver runs with a fixed heap
(``--driver-memory``) at every size.

``--cluster`` starts a standalone cluster here (a master and two workers of one core each, the
pip package's scripts) and runs every size on it; otherwise ``--master`` (default ``local[2]``).
Sessions take the product's defaults (:func:`jobs.session.get_session`): no tuning per size.
The JVM gets faster over the first runs of a plan, so below ``--warm-below`` input rows each plan
runs once untimed and the best of ``--repeats`` runs is kept; from there on each plan runs once.

    python benchmarks/bench_scale.py --cluster --rows 1000000 10000000 100000000 \
        --cells 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from benchmarks.results_file import print_table, save_results  # noqa: E402

UPPER = 250_000.0
MIB = 2**20


# ---------------------------------------------------------------- the parent: sizes in turn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def standalone_cluster(work: Path, worker_memory: str) -> Iterator[str]:
    """A master and two one-core workers on 127.0.0.1; yields the master URL; stops them."""
    spark_class = Path(sys.executable).parent / "spark-class"
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, ready: str, *args: str) -> None:
        log = work / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([str(spark_class), *args], stdout=fh, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 120
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start; its log: {log}")
            time.sleep(0.5)

    try:
        start(
            "master",
            "I have been elected leader",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())),
        )
        for w in (1, 2):
            start(
                f"worker{w}",
                "Successfully registered with master",
                "org.apache.spark.deploy.worker.Worker",
                url,
                *("--host", "127.0.0.1", "--cores", "1", "--memory", worker_memory),
                *("--webui-port", str(free_port()), "--work-dir", str(work / f"work{w}")),
            )
        yield url
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_child(args: argparse.Namespace, master: str, series: str, size: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", series, str(size), "--master", master]
    for flag in ("repeats", "warm_below", "driver_memory", "executor_memory", "cells_rows"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    out = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{series} {size}: the driver failed:\n{out.stderr[-4000:]}")
    row: dict[str, Any] = json.loads(lines[-1])
    print(json.dumps(row), flush=True)
    return row


COLUMNS = [
    ("series", "series", ">6"),
    ("rows", "rows", ">12,"),
    ("cells", "cells", ">11,"),
    ("floor s", "floor_s", ">8"),
    ("release s", "release_s", ">9"),
    ("rel/floor", "release_over_floor", ">9"),
    ("run s", "run_s", ">7"),
    ("run/floor", "run_over_floor", ">9"),
    ("JVM peak MiB", "jvm_peak_rss_mib", ">12"),
    ("heap live MiB", "jvm_live_heap_mib", ">13"),
    ("Python MiB", "python_peak_rss_mib", ">10"),
]


def parent(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="dprelease-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        master = args.master
        if args.cluster:
            master = stack.enter_context(standalone_cluster(Path(tmp), args.worker_memory))
        for n in args.rows:
            results.append(run_child(args, master, "rows", n))
        for k in args.cells:
            results.append(run_child(args, master, "cells", k))
    print()
    print(f"master: {'standalone cluster, 2 workers x 1 core' if args.cluster else args.master}")
    print(f"driver memory {args.driver_memory}, executor memory {args.executor_memory}")
    print_table(results, COLUMNS)
    save_results("scale", {"args": vars(args), "results": results})


# ---------------------------------------------------------------- the child: one size


class PeakMemory:
    """Samples the driver JVM's heap after garbage collection every ``every`` seconds."""

    def __init__(self, spark: Any, every: float = 0.5) -> None:
        self._jvm = spark.sparkContext._jvm
        self._pid = int(spark.sparkContext._gateway.proc.pid)
        self._live = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, every: float) -> None:
        beans = self._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
        heap = [b for b in beans if str(b.getType().name()) == "HEAP"]
        while not self._stop.wait(every):
            # usage right after each pool's last collection: what survived, not garbage
            live = sum(int(b.getCollectionUsage().getUsed()) for b in heap)
            self._live = max(self._live, live)

    def report(self) -> dict[str, float]:
        status = Path(f"/proc/{self._pid}/status").read_text()
        hwm = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmHWM:")
        return {
            "jvm_peak_rss_mib": round(hwm / 1024, 1),
            "jvm_live_heap_mib": round(self._live / MIB, 1),
            # ru_maxrss is in KiB on Linux
            "python_peak_rss_mib": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            ),
        }


def session(args: argparse.Namespace, tmp: Path) -> Any:
    from jobs.session import get_session

    conf = {
        "spark.driver.memory": args.driver_memory,
        "spark.executor.memory": args.executor_memory,
        "spark.executor.cores": "1",
        "spark.ui.enabled": "false",
        "spark.pyspark.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": str(ROOT),
    }
    profile = tmp / "profile.yaml"
    profile.write_text(json.dumps({"conf": conf}))  # JSON is YAML
    spark = get_session(args.master, profile, app=f"dprelease-scale-{args.child[0]}")
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def best_of(kinds: dict[str, Callable[[], None]], warm: bool, repeats: int) -> dict[str, float]:
    if warm:
        for fn in kinds.values():
            fn()
    best = {name: float("inf") for name in kinds}
    for _ in range(repeats if warm else 1):
        for name, fn in kinds.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def spec_doc(tmp: Path, dims: list[str], partitions: dict[str, Any], rows: int) -> dict[str, Any]:
    """Both series' release: one table, count and sum of income, each person in one cell with at
    most ``rows`` rows there; validation by Spark alone (one aggregation)."""
    return {
        "input": {"path": "generated", "privacy_unit": "person_id", "validator": "spark"},
        "budget": {"epsilon": 1.0, "delta": 1e-6},
        "output": {"path": str(tmp / "out")},
        "noise": "laplace",
        "tables": [
            {
                "name": "scale",
                "dimensions": dims,
                "partitions": partitions,
                "bounds": {"max_partitions": 1, "max_rows_per_partition": rows},
                "metrics": ["count", {"sum": "income", "lower": 0, "upper": UPPER}],
            }
        ],
    }


def plain(df: Any, dims: list[str]) -> Any:
    """The aggregation with nothing private about it: rows and clamped income per cell."""
    from pyspark.sql import functions as F

    clamped = F.least(F.greatest(F.col("income"), F.lit(0.0)), F.lit(UPPER))
    return df.groupBy(*dims).agg(F.count(F.lit(1)).alias("n"), F.sum(clamped).alias("s"))


Plans = tuple[dict[str, Any], Callable[[], Any], Callable[[], Any]]
"""A series' spec document, its input frame maker and its floor plan maker."""


def rows_plans(spark: Any, n: int, tmp: Path) -> Plans:
    """The rows series: ``n`` rows of demo microdata, private selection of its cells."""
    from pipelines.demo_data import demo_microdata

    cell = ["state", "county", "age_group", "sex"]
    doc = spec_doc(tmp, cell, {"type": "private", "strategy": "laplace"}, rows=1)

    def data() -> Any:
        return demo_microdata(spark, n)

    return doc, data, lambda: plain(data().repartition("person_id"), cell)


def cells_plans(spark: Any, k: int, rows: int, tmp: Path) -> Plans:
    """The cells series: ``k`` public block codes in a Parquet key file (written untimed)."""
    from pyspark.sql import functions as F

    width = len(str(k))

    def block(index: Any) -> Any:
        return F.lpad(index.cast("string"), width, "0")

    keys = str(tmp / "blocks.parquet")
    spark.range(k).select(block(F.col("id")).alias("block")).write.parquet(keys)
    doc = spec_doc(tmp, ["block"], {"type": "public", "path": keys, "format": "parquet"}, rows=2)

    def data() -> Any:
        person = F.floor(F.col("id") / 2)
        index = F.pmod(F.xxhash64(person), F.lit(k))
        income = F.pmod(F.xxhash64(F.col("id"), F.lit(7)), F.lit(100_000)).cast("double")
        return spark.range(0, rows, numPartitions=max(2, rows // 2_000_000)).select(
            person.cast("long").alias("person_id"),
            block(index).alias("block"),
            income.alias("income"),
        )

    def floor() -> Any:
        aggregated = plain(data().repartition("person_id"), ["block"])
        return spark.read.parquet(keys).join(aggregated, "block", "left")

    return doc, data, floor


def child(args: argparse.Namespace) -> None:
    from jobs.runner import public_keys, run_release
    from pipelines.persistence import release_scope
    from pipelines.plan import plan_release
    from pipelines.release import Secrets, release_table
    from pipelines.spec import parse_spec

    series, size = args.child[0], int(args.child[1])
    with tempfile.TemporaryDirectory(prefix="dprelease-scale-") as name:
        tmp = Path(name)
        spark = session(args, tmp)
        with PeakMemory(spark) as memory:
            if series == "rows":
                doc, data, floor = rows_plans(spark, size, tmp)
                rows, cells = size, None
            else:
                doc, data, floor = cells_plans(spark, size, args.cells_rows, tmp)
                rows, cells = args.cells_rows, size
            spec = parse_spec(doc)
            tplan = plan_release(spec).tables[0]
            runs = iter(range(1_000_000))

            def sink(df: Any) -> None:
                df.write.format("noop").mode("overwrite").save()

            def release() -> None:
                df = data()
                with release_scope():
                    keys = public_keys(spark, spec, tplan.table, df)
                    sink(release_table(df, tplan, "person_id", Secrets.new(), keys))

            def run() -> None:
                outcome = run_release(spark, spec, f"r{next(runs)}", input_df=data(), warn=False)
                if outcome.already_released:
                    raise SystemExit("a benchmark run found its release already there")

            t = best_of(
                {"floor": lambda: sink(floor()), "release": release, "run": run},
                warm=rows < args.warm_below,
                repeats=args.repeats,
            )
        row = {
            "series": series,
            "rows": rows,
            "cells": cells,
            **{f"{k}_s": round(v, 2) for k, v in t.items()},
            "release_over_floor": round(t["release"] / t["floor"], 2),
            "run_over_floor": round(t["run"] / t["floor"], 2),
            **memory.report(),
        }
        spark.stop()
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000, 100_000_000])
    ap.add_argument("--cells", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--cells-rows", type=int, default=10_000_000)
    ap.add_argument("--cluster", action="store_true", help="start a standalone cluster here")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm-below", type=int, default=20_000_000)
    ap.add_argument("--driver-memory", default="1g")
    ap.add_argument("--executor-memory", default="4g")
    ap.add_argument("--worker-memory", default="5g")
    ap.add_argument("--child", nargs=2, metavar=("SERIES", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
