"""Bounds the release chooses itself (``upper: auto``, ``max_partitions: auto``;
pipelines.auto_bounds): parsed, charged
inside the table's budget, chosen near the stated quantile, recorded in the manifest, and the
same when computed again under the same key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from dp_ops.errors import SpecError
from jobs.cli import main
from pipelines.auto_bounds import choose_bounds, resolve
from pipelines.plan import plan_release
from pipelines.release import Secrets
from pipelines.spec import parse_spec
from tests.conftest import base_spec


def _doc(budget: dict[str, Any] | None = None, **auto: Any) -> dict[str, Any]:
    doc = base_spec(budget=budget or {"epsilon": 1.0}, noise="laplace")
    doc["tables"][0]["metrics"] = ["count", {"sum": "v", "lower": 0, "upper": "auto"}]
    if auto:
        doc["tables"][0]["auto_bounds"] = auto
    return doc


def test_auto_bounds_parse_and_bad_settings_are_spec_errors() -> None:
    metric = parse_spec(_doc()).tables[0].metrics[1]
    assert metric.auto == ("upper", "granularity") and metric.lower == 0
    both = _doc()
    both["tables"][0]["metrics"][1] = {"mean": "v", "lower": "auto", "upper": "auto"}
    assert parse_spec(both).tables[0].metrics[1].auto[:2] == ("lower", "upper")
    for bad, match in (
        ({"budget_share": 1.5}, "budget_share"),
        ({"quantile": 0.2}, "quantile"),
        ({"colour": 1}, "colour"),
    ):
        with pytest.raises(SpecError, match=match):
            parse_spec(_doc(**bad))
    plain = base_spec()
    plain["tables"][0]["auto_bounds"] = {"budget_share": 0.2}
    with pytest.raises(SpecError, match=r"only when bounds\.max_partitions or a metric's"):
        parse_spec(plain)


@pytest.mark.parametrize("budget", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_the_chosen_bounds_are_paid_from_the_tables_budget(budget: dict[str, Any]) -> None:
    spec = parse_spec(_doc(budget, budget_share=0.25))
    plan = plan_release(spec)
    (t,) = plan.tables
    if "rho" in budget:
        assert t.auto_epsilon**2 / 2 <= Fraction(1, 8) < (t.auto_epsilon * 1.001) ** 2 / 2
        assert t.zcdp_cost is not None and t.zcdp_cost <= Fraction(1, 2)
        assert plan.cost.rho == t.zcdp_cost
    else:
        assert t.auto_epsilon == Fraction(1, 4) and t.measurement_epsilon == Fraction(3, 4)
        assert sum(m.epsilon for m in t.measurements) == Fraction(3, 4)
        assert plan.cost.epsilon == 1


@pytest.fixture(scope="module")
def persons(spark: Any) -> Iterator[tuple[Any, np.ndarray]]:
    """5,000 persons with 1-3 rows each in three cells; each person's largest value known."""
    rng = np.random.default_rng(3)
    rows, largest = [], []
    for pid in range(5000):
        values = rng.lognormal(8, 1, size=int(rng.integers(1, 4)))
        largest.append(values.max())
        rows += [(pid, ["a", "b", "c"][pid % 3], float(v)) for v in values]
    frame = spark.createDataFrame(rows, "pid long, g string, v double").cache()
    yield frame, np.array(largest)
    frame.unpersist()  # later tests check that nothing stays cached in the session


def test_the_upper_bound_lands_near_the_quantile_of_each_persons_largest_value(
    persons: tuple[Any, np.ndarray],
) -> None:
    frame, largest = persons
    spec = parse_spec(_doc({"epsilon": 2.0}, budget_share=0.5, quantile=0.9))
    (plan,) = plan_release(spec).tables
    secrets = Secrets.new()
    chosen = resolve(frame, plan, "pid", secrets)
    again = choose_bounds(frame, plan.table, "pid", secrets, plan.auto_epsilon)
    metric = chosen.table.metrics[1]
    lower, upper, granularity = metric.lower, metric.upper, metric.granularity
    true = float(np.quantile(largest, 0.9))
    assert lower == 0 and upper is not None and true / 2 <= upper <= 2 * true
    assert again.sides == {("v", "upper"): upper}  # drawn once: the same again under the key
    assert granularity is not None
    # the measurements are planned again with the chosen bound, at the same cost
    assert (chosen.epsilon, chosen.auto_epsilon) == (plan.epsilon, plan.auto_epsilon)
    sum_noise = next(m for m in chosen.measurements if m.column == "s_v")
    assert sum_noise.sensitivity.per_partition * granularity == pytest.approx(upper / 2, rel=1e-3)


def test_a_release_with_an_auto_bound_records_it_and_spends_its_budget(
    persons: tuple[Any, np.ndarray], tmp_path: Path, capsys: Any
) -> None:
    frame, _ = persons
    frame.write.parquet(str(tmp_path / "in"))
    doc = _doc({"epsilon": 1.0})
    doc["tables"][0]["metrics"][1] = {"mean": "v", "lower": 0, "upper": "auto"}
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    assert (
        main(["run", str(tmp_path / "spec.yaml"), "--release-id", "a", "--master", "local[1]"]) == 0
    )
    manifest = json.loads((tmp_path / "out" / "a" / "manifest.json").read_text())
    (table,) = manifest["tables"]
    chosen = table["chosen_bounds"]
    upper = chosen["columns"]["v"]["upper"]
    assert chosen["columns"]["v"]["chosen"] == ["upper"] and upper > 0
    assert chosen["epsilon"] == pytest.approx(0.1)
    assert table["budget"]["bounds_epsilon"] == pytest.approx(0.1)
    assert table["budget"]["measurement_epsilon"] == pytest.approx(0.9)
    assert manifest["budget"]["spent"]["epsilon"] == pytest.approx(1.0)
    mean = next(m for m in table["metrics"] if m["name"] == "mean_v")
    assert mean["clamp"] == [0.0, upper]
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    assert "bounds the release chooses itself (v: upper)" in capsys.readouterr().out


def _l0_doc(budget: dict[str, Any] | None = None, cells: int = 64, **auto: Any) -> dict[str, Any]:
    doc = base_spec(budget=budget or {"epsilon": 1.0}, noise="laplace")
    doc["domains"] = {"g": [f"c{i}" for i in range(cells)]}
    doc["tables"][0]["bounds"] = {"max_partitions": "auto", "max_rows_per_partition": 1}
    doc["tables"][0]["metrics"] = ["count"]
    if auto:
        doc["tables"][0]["auto_bounds"] = auto
    return doc


def test_max_partitions_auto_parses_and_refuses_where_it_means_nothing() -> None:
    t = parse_spec(_l0_doc(quantile=0.9)).tables[0]
    assert t.bounds.auto_partitions and t.bounds.max_partitions == 1 and t.auto_bounds
    assert t.auto_quantile == 0.9  # auto_bounds applies to L0 alone too
    for bad in ("many", 0, 2.5, True):
        doc = _l0_doc()
        doc["tables"][0]["bounds"]["max_partitions"] = bad
        with pytest.raises(SpecError, match="whole number >= 1, or auto"):
            parse_spec(doc)
    total = _l0_doc()
    total["tables"][0]["dimensions"] = []
    with pytest.raises(SpecError, match="one cell: write max_partitions: 1"):
        parse_spec(total)
    levels = _l0_doc()
    levels["tables"][0]["metrics"] = ["privacy_unit_count"]
    levels["tables"][0]["levels"] = [[]]
    with pytest.raises(SpecError, match=r"only with bounds\.max_partitions: 1"):
        parse_spec(levels)


@pytest.fixture(scope="module")
def spread(spark: Any) -> Iterator[tuple[Any, np.ndarray]]:
    """3,000 persons, each with one row in each of 1-40 of 64 cells; each one's cell count."""
    rng = np.random.default_rng(5)
    rows, cells = [], []
    for pid in range(3000):
        k = int(min(40, rng.geometric(0.12)))
        cells.append(k)
        rows += [(pid, f"c{c}", 1.0) for c in rng.choice(64, size=k, replace=False)]
    frame = spark.createDataFrame(rows, "pid long, g string, v double").cache()
    yield frame, np.array(cells)
    frame.unpersist()


@pytest.mark.parametrize("budget", [{"epsilon": 2.0}, {"rho": 2.0}])
def test_max_partitions_auto_lands_near_the_quantile_of_cells_per_person(
    spread: tuple[Any, np.ndarray], budget: dict[str, Any]
) -> None:
    frame, cells = spread
    spec = parse_spec(_l0_doc(budget, budget_share=0.5, quantile=0.9))
    (plan,) = plan_release(spec).tables
    secrets = Secrets.new()
    chosen = resolve(frame, plan, "pid", secrets, max_cells=64)
    true = float(np.quantile(cells, 0.9))
    l0 = chosen.table.bounds.max_partitions
    assert true / 2 <= l0 <= 2 * true and l0 & (l0 - 1) == 0  # a power of two near it
    again = choose_bounds(frame, plan.table, "pid", secrets, plan.auto_epsilon, 64)
    assert again.max_partitions == l0  # drawn once: the same again under the key
    # the count is planned again for the chosen L0, at the same cost
    (count,) = chosen.measurements
    assert count.sensitivity.partitions == l0
    assert (chosen.epsilon, chosen.rho, chosen.zcdp_cost) == (
        plan.epsilon,
        plan.rho,
        plan.zcdp_cost,
    )
    # and its noise is that of a table declared with that L0 at the measurements' budget
    declared = _l0_doc({k: v / 2 for k, v in budget.items()})
    declared["tables"][0]["bounds"]["max_partitions"] = l0
    fixed = plan_release(parse_spec(declared)).tables[0].measurements[0]
    assert (count.mechanism, count.parameter) == (fixed.mechanism, fixed.parameter)


def test_max_partitions_auto_never_exceeds_the_declared_cells(
    spread: tuple[Any, np.ndarray],
) -> None:
    frame, _ = spread
    doc = _l0_doc(cells=64, budget_share=0.5, quantile=0.99)
    (plan,) = plan_release(parse_spec(doc)).tables
    chosen = choose_bounds(frame, plan.table, "pid", Secrets.new(), Fraction(20), max_cells=24)
    assert chosen.max_partitions is not None and chosen.max_partitions <= 24
    assert chosen.max_partitions in (16, 24)  # the 0.99 quantile is ~35 cells: capped


def test_a_release_with_max_partitions_auto_records_it(
    spread: tuple[Any, np.ndarray], tmp_path: Path, capsys: Any
) -> None:
    frame, cells = spread
    frame.write.parquet(str(tmp_path / "in"))
    # epsilon 1 for L0: a lead of ~600 in utility (sensitivity 19) over the one candidate
    # above, 64 cells (at 0.1 the draw lands on 64 about one time in six)
    doc = _l0_doc({"epsilon": 2.0, "delta": 1e-6}, budget_share=0.5)
    doc["tables"][0]["partitions"] = {"type": "private"}
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    run = ["run", str(tmp_path / "spec.yaml"), "--release-id", "a", "--master", "local[1]"]
    assert main(run) == 0
    manifest = json.loads((tmp_path / "out" / "a" / "manifest.json").read_text())
    (table,) = manifest["tables"]
    l0 = table["chosen_bounds"]["max_partitions"]
    assert l0 == table["bounds"]["max_partitions"] and l0 > 1
    true = float(np.quantile(cells, 0.95))
    assert true / 2 <= l0 <= 2 * true
    assert table["budget"]["bounds_epsilon"] == pytest.approx(1.0)
    assert manifest["budget"]["spent"]["epsilon"] == pytest.approx(2.0)
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    out = capsys.readouterr().out
    assert "bounds the release chooses itself (max_partitions)" in out
    assert "threshold follows max_partitions, chosen when the release runs" in out


def test_a_quantile_with_an_auto_upper_bound_reads_its_grid_from_the_chosen_range(
    persons: tuple[Any, np.ndarray], tmp_path: Path
) -> None:
    frame, largest = persons
    frame.write.parquet(str(tmp_path / "in"))
    doc = _doc({"epsilon": 2.0})
    doc["tables"][0]["metrics"] = [
        "count",
        {"quantiles": "v", "probabilities": [0.5], "lower": 0, "upper": "auto", "bins": 200},
    ]
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    spec = parse_spec(doc)
    (plan,) = plan_release(spec).tables
    chosen = resolve(frame, plan, "pid", Secrets.new())
    metric = chosen.table.metrics[1]
    true = float(np.quantile(largest, 0.95))
    assert metric.upper is not None and true / 2 <= metric.upper <= 2 * true
    assert metric.edges[0] == 0 and metric.edges[-1] == metric.upper and len(metric.edges) == 201
    assert metric.granularity is None  # a quantile has a grid of bins, not of sums
    # the histogram's noise does not depend on the range: the same plan either way
    assert [m.parameter for m in chosen.measurements] == [m.parameter for m in plan.measurements]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    run = ["run", str(tmp_path / "spec.yaml"), "--release-id", "a", "--master", "local[1]"]
    assert main(run) == 0
    manifest = json.loads((tmp_path / "out" / "a" / "manifest.json").read_text())
    assert manifest["tables"][0]["chosen_bounds"]["columns"]["v"]["chosen"] == ["upper"]
    released = pq.read_table(tmp_path / "out" / "a" / "t").to_pandas()
    # one row per person and cell (max_rows_per_partition 1) of lognormal(8, 1): median e^8
    assert released["p50_v"].between(0.75 * np.exp(8), 1.25 * np.exp(8)).all(), released
