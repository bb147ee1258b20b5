"""Census-style table suites: levels measured from one bounded dataset, consistent on release."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dp_ops.errors import SpecError
from jobs.cli import main
from pipelines.plan import plan_release
from pipelines.spec import parse_spec
from tests.conftest import ROOT, base_spec

SUITE = ROOT / "conf" / "census_suite.yaml"


def test_the_suite_releases_levels_that_add_up_with_per_cell_errors(
    spark: Any, demo_path: str, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out"
    args = ["run", str(SUITE), "--input", demo_path, "--output", str(out), "--release-id", "s1"]
    assert main(args) == 0, capsys.readouterr().err
    # nothing stays cached in the session after the release (a scheduler may reuse it)
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()
    release = out / "s1"
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["budget"]["spent"]["rho"] == pytest.approx(0.5, rel=1e-9)
    read = {p.name: pd.read_parquet(p) for p in release.iterdir() if p.is_dir()}
    total = read["persons_by_county__total"]
    states = read["persons_by_county__by_state"]
    counties = read["persons_by_county"]
    assert len(total) == 1 and len(states) == 20 and len(counties) == 160
    unit = "privacy_unit_count"
    for frame in (total, states, counties):
        assert frame[unit].dtype == "int64" and (frame[unit] >= 0).all()
        assert (frame[f"{unit}_sd"] > 0).all() and (frame[f"{unit}_halfwidth"] > 0).all()
    assert states[unit].sum() == total[unit].iloc[0]  # exactly
    by_state = counties.groupby("state")[unit].sum()
    assert (by_state == states.set_index("state")[unit].reindex(by_state.index)).all()
    cross = read["persons_by_state_sex_age"]
    margin = read["persons_by_state_sex_age__by_state_sex"]
    top = read["persons_by_state_sex_age__by_state"]
    assert len(cross) == 20 * 2 * 7 and len(margin) == 40 and len(top) == 20
    assert (
        cross.groupby(["state", "sex"])[unit].sum().values
        == margin.sort_values(["state", "sex"])[unit].values
    ).all()
    assert (
        margin.groupby("state")[unit].sum().values == top.sort_values("state")[unit].values
    ).all()
    county_entry = next(t for t in manifest["tables"] if t["name"] == "persons_by_county")
    levels = county_entry["levels"]["outputs"]
    assert [lv["name"] for lv in levels] == [
        "persons_by_county__total",
        "persons_by_county__by_state",
        "persons_by_county",
    ]
    assert [lv["released_cells"] for lv in levels] == [1, 20, 160]
    assert [lv["budget_weight"] for lv in levels] == [1, 1, 2]  # conf: counties get twice
    rho = [lv["measurements"][0]["rho"] for lv in levels]
    assert rho[2] == pytest.approx(2 * rho[0]) and rho[1] == pytest.approx(rho[0])
    for level, frame in zip(levels, (total, states, counties), strict=True):
        raw_sd = level["measurements"][0]["standard_deviation"]
        assert (frame[f"{unit}_sd"] < raw_sd).all()  # combining levels never adds error


def test_every_level_is_a_measurement_of_the_table_budget() -> None:
    doc = base_spec(budget={"rho": 0.3}, noise="gaussian", domains={"g": ["a", "b"], "h": [1, 2]})
    table = doc["tables"][0]
    table.update(dimensions=["g", "h"], levels=[[], ["g"]], metrics=["count", "privacy_unit_count"])
    plan = plan_release(parse_spec(doc))
    (t,) = plan.tables
    assert sorted(m.column for m in t.measurements) == sorted(
        [
            "count",
            "privacy_unit_count",
            "count@0",
            "privacy_unit_count@0",
            "count@1",
            "privacy_unit_count@1",
        ]
    )
    assert sum(m.rho for m in t.measurements) == t.rho  # the levels share the table's rho


@pytest.mark.parametrize(
    ("levels", "change", "message"),
    [
        ([["h"], ["g"]], {}, "nested in the next"),
        ([["x"]], {}, "distinct columns of the table's dimensions"),
        ([["g"]], {"partitions": {"type": "private"}}, "need public partitions"),
        ([["g"]], {"metrics": [{"sum": "v", "lower": 0, "upper": 1}]}, "count and"),
        (
            [["g"]],
            {
                "metrics": ["privacy_unit_count"],
                "bounds": {"max_partitions": 2, "max_rows_per_partition": 1},
            },
            "max_partitions: 1",
        ),
    ],
)
def test_bad_levels_are_spec_errors(levels: Any, change: dict[str, Any], message: str) -> None:
    doc = base_spec(budget={"epsilon": 1.0, "delta": 1e-6}, domains={"g": ["a"], "h": [1]})
    table = doc["tables"][0]
    table.update({"dimensions": ["g", "h"], "levels": levels, "metrics": ["count"], **change})
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert str(err.value).startswith("tables[0].levels") and message in str(err.value)


@pytest.mark.parametrize("budget", [{"rho": 0.3}, {"epsilon": 1.0, "delta": 1e-6}])
def test_level_weights_split_the_table_budget_between_levels(budget: dict[str, float]) -> None:
    doc = base_spec(budget=budget, noise="gaussian", domains={"g": ["a", "b"], "h": [1, 2]})
    table = doc["tables"][0]
    table.update(dimensions=["g", "h"], levels=[[], ["g"]], metrics=["count"])
    equal = plan_release(parse_spec(doc)).tables[0]
    table["level_weights"] = [1, 1, 2]
    (t,) = plan_release(parse_spec(doc)).tables
    rho = {m.column: m.rho for m in t.measurements}
    assert rho["count"] == 2 * rho["count@0"] == 2 * rho["count@1"]  # the finest gets half
    assert sum(rho.values()) == sum(m.rho for m in equal.measurements)  # same table budget
    variance = {m.column: m.parameter for m in t.measurements}
    assert float(variance["count@0"]) == pytest.approx(2 * float(variance["count"]), rel=1e-4)
    base = float(next(m.parameter for m in equal.measurements if m.column == "count"))
    assert float(variance["count"]) < base < float(variance["count@0"])


@pytest.mark.parametrize(
    ("levels", "weights", "message"),
    [
        ([[], ["g"]], [1, 2], "must list 3 weights"),
        ([[], ["g"]], [1, 0, 2], "level_weights[1]: must be > 0"),
        (None, [1], "needs levels"),
    ],
)
def test_bad_level_weights_are_spec_errors(levels: Any, weights: Any, message: str) -> None:
    doc = base_spec(budget={"epsilon": 1.0, "delta": 1e-6}, domains={"g": ["a"], "h": [1]})
    table = doc["tables"][0]
    table.update(dimensions=["g", "h"], metrics=["count"], level_weights=weights)
    if levels is not None:
        table["levels"] = levels
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert str(err.value).startswith("tables[0].level_weights") and message in str(err.value)
