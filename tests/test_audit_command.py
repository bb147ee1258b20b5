"""``dprelease audit`` (pipelines.audit, jobs.audit): the engine's own mechanisms audited on
made-up neighbouring data; a broken engine must be caught."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import cli
from pipelines import audit
from tests.conftest import base_spec

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, **table: Any) -> str:
    doc = base_spec(budget={"epsilon": 2.0}, noise="laplace")
    doc["tables"][0].update(
        metrics=["count", {"sum": "v", "lower": 0, "upper": 10}],
        bounds={"max_partitions": 1, "max_rows_per_partition": 2},
    )
    doc["tables"][0].update(table)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _audit(spec: str, capsys: Any) -> tuple[int, dict[str, Any]]:
    code = cli.main(["audit", spec, "--replicates", "20000", "--json", "--master", "local[1]"])
    return code, json.loads(capsys.readouterr().out)


def test_the_engine_keeps_its_claims_and_the_halved_noise_is_caught(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    code, out = _audit(_spec(tmp_path), capsys)
    rows = out["measurements"]
    assert sorted(r["measurement"] for r in rows) == ["count", "s_v"]
    for r in rows:
        assert r["epsilon_lower_bound"] <= r["claimed_epsilon"] < r["control_lower_bound"], r
        assert r["claimed_epsilon"] == pytest.approx(1.0)  # two measurements share epsilon 2
    assert code == 0


def test_an_engine_that_adds_half_the_noise_is_reported_with_exit_6(
    spark: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = audit.noisy_measurements

    def broken(df: Any, plan: Any, unit: str, secrets: Any) -> Any:
        return honest(df, audit.halved(plan), unit, secrets)

    monkeypatch.setattr(audit, "noisy_measurements", broken)
    code, out = _audit(_spec(tmp_path), capsys)
    assert code == 6
    assert all(r["exceeded"] for r in out["measurements"])


def test_tables_with_levels_are_named_as_not_audited(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    code, out = _audit(_spec(tmp_path, levels=[[]], metrics=["count"]), capsys)
    assert out["measurements"] == [] and "tables with levels" in out["not_audited"][0]
    assert code == 0
