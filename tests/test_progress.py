"""Progress of long stages (jobs.progress): a status line on a terminal, log lines elsewhere."""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from typing import Any

import pytest

from jobs.progress import stage


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _slow_job(spark: Any) -> None:
    spark.sparkContext.parallelize(range(4), 4).map(lambda x: time.sleep(0.4) or x).count()


def test_a_terminal_sees_elapsed_time_and_tasks_done_then_a_cleared_line(spark: Any) -> None:
    out = Terminal()
    with stage("slow", spark, out, every=0.05):
        _slow_job(spark)
    shown = out.getvalue()
    assert re.search(r"\r\x1b\[Kstage slow: \d+ s, tasks [0-3]/4 of the running Spark", shown)
    assert shown.endswith("\r\x1b[K")  # nothing left on the line for what prints next


def test_elsewhere_a_long_stage_logs_plain_lines(spark: Any, caplog: Any) -> None:
    out = io.StringIO()  # not a terminal: a scheduler's log
    with caplog.at_level(logging.INFO, logger="dprelease"), stage("slow", spark, out, every=0.1):
        _slow_job(spark)
    assert out.getvalue() == ""
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "stage slow: started" and messages[-1].startswith("stage slow: done in")
    assert any(
        re.fullmatch(r"stage slow: \d+ s(, tasks \d+/4 .*)? \(running\)", m) for m in messages
    )


def test_a_failing_stage_stops_its_progress_and_is_not_reported_done(caplog: Any) -> None:
    out = Terminal()
    level = caplog.at_level(logging.INFO, logger="dprelease")
    with level, pytest.raises(ValueError), stage("fails", None, out, every=0.01):
        time.sleep(0.05)
        raise ValueError("boom")
    assert not any(t.name == "dprelease-progress" for t in threading.enumerate())
    assert not any("done" in r.getMessage() for r in caplog.records)
    assert "stage fails: 0 s" in out.getvalue() and "tasks" not in out.getvalue()
