"""The package as users install it: a wheel with the declared ranges, installed into an existing
Spark environment without replacing anything in it.

Run in each test environment (the newest set, and Spark 3.5 with the oldest supported
libraries), the second test shows that both satisfy the wheel's ranges as they are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
PIP_DRY_RUN = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A wheel built from a copy of the project (the checkout stays clean), and the build's
    output."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("dp_ops", "pipelines", "jobs"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("dprelease-*.whl")
    return built, done.stdout + done.stderr


def test_the_wheel_declares_the_supported_ranges(wheel: tuple[Path, str]) -> None:
    built, log = wheel
    assert "deprecat" not in log.lower(), log[-3000:]  # e.g. the licence table's warning
    with zipfile.ZipFile(built) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
        names = z.namelist()
    assert "Requires-Python: >=3.10" in text
    assert "License-Expression: Apache-2.0" in text
    lines = text.splitlines()
    requires = {line.split(": ", 1)[1] for line in lines if line.startswith("Requires-Dist")}
    assert "pyspark<4.2,>=3.5.0" in requires
    assert not any("==" in r.split(";")[0] for r in requires), requires  # ranges, not pins
    assert {"dp_ops/samplers.py", "pipelines/release.py", "jobs/cli.py"} <= set(names)
    assert not any(n.startswith("tests/") for n in names)


def test_installing_the_wheel_changes_nothing_in_this_spark_environment(
    wheel: tuple[Path, str], tmp_path: Path
) -> None:
    """pip, asked to install the wheel here, installs the wheel alone: this environment's
    pyspark, numpy, pandas, pyarrow and great-expectations already satisfy its ranges."""
    built, _ = wheel
    report = tmp_path / "report.json"
    done = subprocess.run(
        [*PIP_DRY_RUN, "--report", str(report), str(built)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs == ["dprelease"], installs
