"""``dprelease audit`` (pipelines.audit, jobs.audit): the engine's own mechanisms audited on
made-up neighbouring data; a broken engine must be caught."""

from __future__ import annotations

import dataclasses
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


def test_tables_with_levels_are_audited_level_by_level(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    spec = _spec(tmp_path, levels=[[]], level_weights=[1, 1], metrics=["count"])
    code, out = _audit(spec, capsys)
    rows = {r["measurement"]: r for r in out["measurements"]}
    assert set(rows) == {"count@0", "count"}  # the total, and the table's own cells
    for r in rows.values():
        assert r["epsilon_lower_bound"] <= r["claimed_epsilon"] < r["control_lower_bound"], r
    assert code == 0


def test_a_suite_is_audited_query_by_query(spark: Any, tmp_path: Path, capsys: Any) -> None:
    suite = _spec(
        tmp_path,
        dimensions=["g", "s"],
        geography=[[], ["g"]],
        margins=[[]],
        max_detail_loss=1.0,  # the margins get enough budget for their controls to be seen
        metrics=["count"],
    )
    doc = yaml.safe_load(Path(suite).read_text())
    doc["domains"]["s"] = ["f", "m"]
    Path(suite).write_text(yaml.safe_dump(doc))
    code, out = _audit(suite, capsys)
    names = [r["measurement"] for r in out["measurements"]]
    # the detailed cells, and the total and the margin at each geographic level
    assert sorted(names) == ["count", "count@0_0", "count@0_1", "count@1_1"]
    assert code == 0, out


def _chosen_spec(tmp_path: Path) -> str:
    """Bounds the release chooses (both sides of a column, and L0) and private selection."""
    doc = base_spec(budget={"epsilon": 2.0, "delta": 1e-6}, noise="laplace")
    doc["domains"] = {"g": [f"g{i}" for i in range(8)]}
    doc["tables"][0].update(
        partitions={"type": "private", "strategy": "laplace"},
        bounds={"max_partitions": "auto", "max_rows_per_partition": 1},
        auto_bounds={"budget_share": 0.3},
        metrics=["count", {"mean": "v", "lower": "auto", "upper": "auto"}],
    )
    path = tmp_path / "chosen.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_chosen_bounds_and_private_selection_are_audited_with_their_controls(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    code, out = _audit(_chosen_spec(tmp_path), capsys)
    rows = {r["measurement"]: r for r in out["measurements"]}
    assert set(rows) >= {"auto v/lower", "auto v/upper", "auto max_partitions", "selection"}
    for name in ("auto v/lower", "auto v/upper", "auto max_partitions"):
        assert rows[name]["mechanism"] == "exponential_mechanism"
        assert rows[name]["claimed_epsilon"] == pytest.approx(0.2)  # 0.3 of 2, three bounds
    for r in rows.values():
        assert r["epsilon_lower_bound"] <= r["claimed_epsilon"] < r["control_lower_bound"], r
    assert rows["selection"]["mechanism"] == "laplace selection"
    assert code == 0


def test_a_chosen_bound_drawn_with_half_its_sensitivity_is_reported_with_exit_6(
    spark: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dp_ops import quantiles

    honest = quantiles.quantile_utilities

    def broken(at_or_below: Any, n: int, q: Any) -> tuple[list[int], int]:
        utilities, sensitivity = honest(at_or_below, n, q)
        return utilities, max(1, sensitivity // 2)  # claims twice the epsilon it has

    monkeypatch.setattr(quantiles, "quantile_utilities", broken)
    code, out = _audit(_chosen_spec(tmp_path), capsys)
    rows = {r["measurement"]: r for r in out["measurements"]}
    assert code == 6
    assert all(rows[n]["exceeded"] for n in ("auto v/upper", "auto max_partitions")), rows
    assert not rows["selection"]["exceeded"] and not rows["count"]["exceeded"]


def test_a_selection_that_draws_half_its_noise_is_reported_with_exit_6(
    spark: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import audit_selection

    honest = audit_selection.selection_jobs

    def broken(plan: Any) -> Any:
        sel = plan.selection
        noise = dataclasses.replace(sel.noise, parameter=sel.noise.parameter / 2)
        return honest(dataclasses.replace(plan, selection=dataclasses.replace(sel, noise=noise)))

    monkeypatch.setattr(audit_selection, "selection_jobs", broken)
    code, out = _audit(_chosen_spec(tmp_path), capsys)
    rows = {r["measurement"]: r for r in out["measurements"]}
    assert code == 6 and rows["selection"]["exceeded"], rows["selection"]


def test_gaussian_measurements_keep_their_claims_and_the_halved_noise_is_caught(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    doc = base_spec(budget={"rho": 0.5}, noise="gaussian")
    doc["tables"][0]["metrics"] = ["count"]
    path = tmp_path / "gaussian.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = cli.main(
        ["audit", str(path), "--replicates", "100000", "--json", "--master", "local[1]"]
    )
    (row,) = json.loads(capsys.readouterr().out)["measurements"]
    assert row["mechanism"] == "discrete_gaussian" and row["delta"] == audit.GAUSSIAN_DELTA
    assert row["epsilon_lower_bound"] <= row["claimed_epsilon"] < row["control_lower_bound"], row
    assert code == 0
