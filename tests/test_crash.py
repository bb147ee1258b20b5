"""The job killed mid-run (kill -9): nothing is committed, and a rerun cleans up the killed
attempt's directory and completes uncharged; on a local path and through Hadoop's FileSystem API
(a ``file://`` URI)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import writer
from jobs.cli import main
from jobs.ledger import Ledger
from jobs.writer import ATTEMPT, MANIFEST
from tests.test_jobs import DEMO, _env

KILL_POINTS = {
    # the first table's Spark job is bounding, selecting, drawing noise and writing
    "noise": "stage table persons_by_state_age_sex: bound, aggregate, select, noise, write: "
    "started",
    # the last table is written under the release's directory; the manifest (the commit) is next
    "write": "stage table persons_by_county: check the written table: started",
}


def _signalled_at(
    args: list[str], tmp_path: Path, point: str, sig: signal.Signals
) -> tuple[subprocess.Popen[str], list[str]]:
    """The CLI run with ``args`` in its own process group, sent ``sig`` (the JVM with it) when it
    logs ``KILL_POINTS[point]``; returns the process and the stderr lines read so far."""
    exe = shutil.which("dprelease", path=str(Path(sys.executable).parent))
    assert exe
    # a killed JVM cannot remove its scratch directories: keep them under tmp_path, not /tmp
    env = {**_env(), "SPARK_LOCAL_DIRS": str(tmp_path / "spark-scratch")}
    proc = subprocess.Popen(
        [exe, *args, "--master", "local[2]"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if KILL_POINTS[point] in line:
            os.killpg(proc.pid, sig)
            break
    return proc, seen


@pytest.mark.crash
@pytest.mark.parametrize("uri", [False, True], ids=["local-path", "file-uri"])
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_killed_release_commits_nothing_and_a_rerun_cleans_up_uncharged(
    point: str, uri: bool, demo_path: str, tmp_path: Path, spark: Any
) -> None:
    ledger = tmp_path / "ledger.sqlite"
    init = ["budget", "init", "demo", "--epsilon", "1.5", "--delta", "1e-5"]
    assert main([*init, "--ledger", str(ledger)]) == 0
    doc = yaml.safe_load(DEMO.read_text())
    out = tmp_path / "out"
    doc["input"]["path"] = demo_path
    doc["output"]["path"] = out.as_uri() if uri else str(out)
    doc["budget"] = {"epsilon": 1.0, "delta": 1e-6}
    doc["ledger"] = {"dataset": "demo", "path": str(ledger)}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    args = ["run", str(spec), "--release-id", "monthly"]
    proc, seen = _signalled_at(args, tmp_path, point, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert not (out / "monthly" / MANIFEST).exists()  # nothing committed ...
    if point == "write":  # ... though the tables were on disk, in the marked attempt directory
        assert (out / "monthly" / ATTEMPT).exists()
        assert (out / "monthly" / "persons_by_county").is_dir()
    account = Ledger(ledger).account("demo")
    assert [r for r, _, _ in account.releases] == ["monthly"]  # charged before any noise
    assert main(args) == 0  # the rerun completes ...
    assert json.loads((out / "monthly" / MANIFEST).read_text())["release_id"] == "monthly"
    assert not (out / "monthly" / ATTEMPT).exists()  # ... replacing the killed attempt's files
    written = {p.name for p in (out / "monthly").iterdir()}
    assert written == {MANIFEST, *(t["name"] for t in doc["tables"])}
    assert Ledger(ledger).account("demo").spent.epsilon == 1  # ... without a second charge


@pytest.mark.crash
@pytest.mark.parametrize("lease", [True, False], ids=["lease", "control-no-lease-check"])
def test_a_second_attempt_while_the_first_runs_is_refused_and_the_first_publishes(
    lease: bool,
    demo_path: str,
    tmp_path: Path,
    spark: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    """A scheduler retries a task it thinks lost while the first attempt still runs (here: the
    first is stopped with SIGSTOP mid-release, then continued). The control disables the lease
    check: the retry takes the directory over and publishes, and the first attempt, continued,
    stops without publishing or deleting anything (exit 5)."""
    doc = yaml.safe_load(DEMO.read_text())
    out = tmp_path / "out"
    doc["input"]["path"] = demo_path
    doc["output"]["path"] = str(out)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    args = ["run", str(spec), "--release-id", "monthly"]
    first, seen = _signalled_at(args, tmp_path, "noise", signal.SIGSTOP)
    try:
        assert (out / "monthly" / ATTEMPT).exists(), "".join(seen)[-3000:]
        if not lease:
            monkeypatch.setattr(writer, "_holder", lambda store, final: None)
        second = main(args)
        message = capsys.readouterr().err
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    rest = first.communicate(timeout=300)[1]
    manifest = json.loads((out / "monthly" / MANIFEST).read_text())
    assert manifest["release_id"] == "monthly"
    written = {p.name for p in (out / "monthly").iterdir()}
    assert written == {MANIFEST, *(t["name"] for t in doc["tables"])}
    if lease:
        assert second == 2 and "another attempt (process" in message, message
        assert first.returncode == 0, rest[-3000:]
    else:  # the retry took over a live attempt and published (what the lease prevents); the
        # first, continued, stops without publishing: at its claim's check, or at a table the
        # retry already wrote (tables are written only where none is)
        assert second == 0, message
        assert first.returncode == 5, rest[-3000:]
