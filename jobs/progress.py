"""Progress of long work: each stage's elapsed time and, where Spark's status tracker knows it,
the tasks done out of the tasks of Spark's active stages.

On a terminal (stderr is a TTY) one status line rewrites itself about twice a second while a
stage runs; anywhere else (a scheduler's log, a pipe) a plain log line says the same every
``PLAIN_EVERY`` seconds, so a log shows that a long stage is alive without filling up. Task
counts are Spark's partitions, never rows: nothing here is derived from the data's values.
On Spark Connect (no status tracker in the client) only the elapsed time is shown.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from pyspark.sql import SparkSession

from pipelines.spark_compat import is_connect

log = logging.getLogger("dprelease")

TERMINAL_EVERY = 0.5
PLAIN_EVERY = 30.0

Tasks = Callable[[], "tuple[int, int] | None"]


def spark_tasks(spark: SparkSession | None) -> Tasks:
    """A reader of (tasks done, tasks) over Spark's active stages; None when nothing runs or the
    session has no status tracker (Spark Connect)."""
    if spark is None or is_connect(spark):
        return lambda: None
    tracker = spark.sparkContext.statusTracker()

    def read() -> tuple[int, int] | None:
        done = total = 0
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                done += info.numCompletedTasks
                total += info.numTasks
        return (done, total) if total else None

    return read


def describe(name: str, elapsed: float, tasks: tuple[int, int] | None) -> str:
    line = f"stage {name}: {elapsed:.0f} s"
    if tasks is not None:
        line += f", tasks {tasks[0]}/{tasks[1]} of the running Spark stages"
    return line


@contextmanager
def stage(
    name: str,
    spark: SparkSession | None = None,
    stream: TextIO | None = None,
    every: float | None = None,
) -> Iterator[None]:
    """Log the stage's start and end (with its seconds) and show its progress while it runs.

    ``stream``: where a terminal's status line goes (stderr); ``every``: seconds between
    updates (TERMINAL_EVERY on a terminal, PLAIN_EVERY otherwise)."""
    out = sys.stderr if stream is None else stream
    terminal = out.isatty()
    interval = every if every is not None else TERMINAL_EVERY if terminal else PLAIN_EVERY
    tasks = spark_tasks(spark)
    start = time.monotonic()
    done = threading.Event()
    lock = threading.Lock()

    def tick() -> None:
        while not done.wait(interval):
            try:
                line = describe(name, time.monotonic() - start, tasks())
            except Exception:  # the tracker went away with the session: progress only
                line = describe(name, time.monotonic() - start, None)
            with lock:
                if done.is_set():
                    return
                if terminal:
                    out.write(f"\r\x1b[K{line}")
                    out.flush()
                else:
                    log.info("%s (running)", line)

    log.info("stage %s: started", name)
    ticker = threading.Thread(target=tick, name="dprelease-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        with lock:
            done.set()
            if terminal:
                out.write("\r\x1b[K")
                out.flush()
        ticker.join()
    log.info("stage %s: done in %.1f s", name, time.monotonic() - start)
