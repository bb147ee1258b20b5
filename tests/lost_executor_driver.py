"""Driver of tests/test_cluster.py's lost-executor test: one release on a standalone cluster,
with fixed noise keys (a test's, never a release's), optionally killing (SIGKILL) the
application's executor JVMs (both workers') right after the release first keeps a computed frame,
so that every kept block is lost; the workers start new executors.

    python tests/lost_executor_driver.py MASTER SPEC INPUT OUTPUT RELEASE_ID MODE

MODE: ``undisturbed``; ``kill`` (the product's :func:`~pipelines.persistence.keep`); or
``kill-local-checkpoint``, the control: frames kept with ``localCheckpoint`` instead, whose
blocks die with the executor. Prints ``released`` or ``failed: <exception class>``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.config import load_spec
from jobs.runner import run_release
from pipelines import cells, consistency, noise, persistence
from pipelines import release as release_module

KEEPERS = (cells, consistency, noise, release_module)
"""The modules that imported ``keep`` by name."""


def executor_pids(app_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmd and (
            app_id.encode() in cmd
        ):
            pids.append(int(entry.name))
    return sorted(pids)


def main() -> None:
    master, spec_path, input_path, output, rid, mode = sys.argv[1:7]
    spark = (
        SparkSession.builder.master(master)
        .appName("lost-executor")
        .config("spark.ui.enabled", "false")
        .config("spark.executor.cores", "1")
        .config("spark.cores.max", "2")
        .config("spark.executor.memory", "768m")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    fixed = release_module.Secrets(key=bytes(range(32)), salt=(1, 2, 3, 4), cell_salt=(5, 6))
    release_module.Secrets.new = classmethod(lambda cls: fixed)  # type: ignore[assignment]
    app_id = spark.sparkContext.applicationId
    deadline = time.monotonic() + 120
    while len(executor_pids(app_id)) < 2:  # both workers' executors, before any job
        if time.monotonic() > deadline:
            raise SystemExit("the two executors did not start")
        time.sleep(0.5)

    if mode != "undisturbed":
        original = persistence.keep
        killed: list[int] = []

        def keep(df: DataFrame, eager: bool = True) -> DataFrame:
            if mode == "kill-local-checkpoint":
                kept = df.localCheckpoint(eager=True)
            else:
                kept = original(df, eager=True)
            if not killed:  # the kept blocks live on the executors: lose them all
                killed.extend(executor_pids(app_id))
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
                while any(Path(f"/proc/{pid}").exists() for pid in killed):
                    time.sleep(0.1)
                time.sleep(3)  # the workers report the loss; the driver drops the blocks
            return kept

        for module in KEEPERS:
            module.keep = keep  # type: ignore[attr-defined]

    spec = load_spec(spec_path, input_path=input_path, output_path=output)
    try:
        run_release(spark, spec, rid)
        print("released")
    except Exception as exc:  # the control's expected end
        print(f"failed: {type(exc).__name__}")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
    sys.exit(0)
