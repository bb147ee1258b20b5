"""A real Spark standalone cluster: a master and two workers on 127.0.0.1, from the pip package.

The release is submitted as the README tells users (code shipped with ``--py-files``), runs on
two executor JVMs on two workers, and everything the test started is stopped by process id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.cli import main
from tests.conftest import ROOT
from tests.test_jobs import DEMO, _env, _run_ok

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"{log.name}: exited early:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{log.name}: no {text!r} within {timeout} s")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[Path]]]:
    """A master and two 1-core workers; yields (master URL, worker logs); stops them by pid."""
    env = _env()
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(BIN / "spark-class"), *args], env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc, log

    try:
        master, mlog = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())),
        )
        wait_for(mlog, "I have been elected leader", master)
        logs = []
        for w in (1, 2):
            proc, wlog = start(
                f"worker{w}",
                "org.apache.spark.deploy.worker.Worker",
                url,
                *("--host", "127.0.0.1", "--cores", "1", "--memory", "1g"),
                *("--webui-port", str(free_port()), "--work-dir", str(tmp_path / f"work{w}")),
            )
            wait_for(wlog, "Successfully registered with master", proc)
            logs.append(wlog)
        yield url, logs
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.cluster
def test_release_on_a_standalone_cluster_with_two_workers(
    cluster: tuple[str, list[Path]], demo_path: str, tmp_path: Path, capsys: Any
) -> None:
    url, worker_logs = cluster
    zipped = tmp_path / "dprelease-pyfiles.zip"
    assert main(["package", "--output", str(zipped)]) == 0
    out = tmp_path / "out"
    cmd = [
        str(BIN / "spark-submit"),
        *("--master", url, "--py-files", str(zipped)),
        *("--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.ui.enabled=false"),
        *("--executor-cores", "1", "--total-executor-cores", "2", "--executor-memory", "768m"),
        str(ROOT / "jobs" / "release.py"),
        *("--config", str(DEMO), "--input", demo_path, "--output", str(out)),
        *("--release-id", "on-cluster"),
    ]
    _run_ok(cmd, cwd=tmp_path)  # client mode: the driver runs here, tasks on the workers
    release = out / "on-cluster"
    manifest = json.loads((release / "manifest.json").read_text())
    for table in manifest["tables"]:
        released = pd.read_parquet(release / table["path"])
        assert len(released) == table["released_cells"] > 0
    state = pd.read_parquet(release / "persons_by_state_age_sex")
    assert len(state) == 20 * 7 * 2 and (state["privacy_unit_count"] >= 0).all()
    for log in worker_logs:  # both workers ran an executor of this application
        assert "Asked to launch executor" in log.read_text(errors="replace"), log.name


DRIVER = Path(__file__).parent / "lost_executor_driver.py"
SUITE = ROOT / "conf" / "census_suite.yaml"  # levels: later steps read frames kept earlier


def _released(release: Path) -> dict[str, list[dict[str, Any]]]:
    manifest = json.loads((release / "manifest.json").read_text())
    tables = {}
    for t in manifest["tables"]:
        for name in [t["name"], *(lv["name"] for lv in t.get("levels", {}).get("outputs", []))]:
            frame = pd.read_parquet(release / name)
            tables[name] = frame.sort_values(list(frame.columns)).to_dict("records")
    return tables


@pytest.mark.cluster
def test_a_release_survives_lost_executors_with_the_values_of_an_undisturbed_run(
    cluster: tuple[str, list[Path]], demo_path: str, tmp_path: Path
) -> None:
    url, _ = cluster
    out = tmp_path / "out"

    def run(rid: str, mode: str) -> str:
        cmd = [sys.executable, str(DRIVER), url, str(SUITE), demo_path, str(out), rid, mode]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout.strip().splitlines()[-1]

    assert run("undisturbed", "undisturbed") == "released"
    assert run("executors-lost", "kill") == "released"  # lost blocks are computed again ...
    undisturbed = _released(out / "undisturbed")
    assert undisturbed and all(undisturbed.values())
    assert _released(out / "executors-lost") == undisturbed  # ... with the same values
    # control: blocks kept by localCheckpoint die with their executor, and so does the release
    assert run("control", "kill-local-checkpoint").startswith("failed")
    assert not (out / "control" / "manifest.json").exists()
