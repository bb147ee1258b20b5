"""``dprelease analyze`` (pipelines.analysis, jobs.analyze): exact, operator-only statistics of
what the bounds drop and cost, and recommended bounds."""

from __future__ import annotations

import json
import os
import random
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import cli
from pipelines.analysis import analyze_table
from pipelines.bounding import ValueColumn, bound_contributions
from pipelines.plan import plan_release
from pipelines.spec import parse_spec
from tests.conftest import base_spec

# units 0-59: one cell, one row; 60-119: cells g0, g1, g2 with 1, 3, 5 rows;
# 120-149: five cells with 4 rows each; values 1 except a few large ones
CELLS = ["g0", "g1", "g2", "g3", "g4"]


def _rows() -> list[tuple[int, str, float]]:
    rows = [(u, CELLS[u % 5], 1.0) for u in range(60)]
    for u in range(60, 120):
        rows += [(u, CELLS[j], 1.0) for j, n in enumerate((1, 3, 5)) for _ in range(n)]
    for u in range(120, 150):
        rows += [(u, c, 1.0) for c in CELLS for _ in range(4)]
    rows[:5] = [(u, g, 1000.0) for u, g, _ in rows[:5]]  # outliers: five rows of 1000
    return rows


def _spec(**table: Any) -> Any:
    doc = base_spec(domains={"g": CELLS})
    doc["tables"][0].update(table)
    return parse_spec(doc)


@pytest.fixture(scope="module")
def data(spark: Any) -> Iterator[Any]:
    frame = spark.createDataFrame(_rows(), "pid long, g string, v double").cache()
    yield frame
    frame.unpersist()  # later tests check that nothing stays cached in the session


def test_contribution_histograms_and_shares_are_exact(data: Any) -> None:
    spec = _spec(bounds={"max_partitions": 2, "max_rows_per_partition": 3})
    out = analyze_table(data, spec, 0)
    assert out["units"] == 150 and out["rows"] == len(_rows()) and out["cells_with_data"] == 5
    assert out["cells_per_unit"]["histogram"] == [[1, 60], [3, 60], [5, 30]]
    assert out["cells_per_unit"]["share_of_units_above_max_partitions"] == pytest.approx(0.6)
    assert out["rows_per_unit_and_cell"]["histogram"] == [[1, 120], [3, 60], [4, 150], [5, 60]]
    v = out["values"]["v"]
    assert v["share_above_upper"] == pytest.approx(5 / len(_rows()))
    assert v["quantiles"]["1"] == 1000.0 and v["quantiles"]["0.5"] == 1.0
    assert "NOT privacy-protected" in out["privacy"]


def test_with_max_partitions_auto_the_analysis_uses_the_l0_the_release_aims_at(
    data: Any,
) -> None:
    bounds = {"max_partitions": "auto", "max_rows_per_partition": 3}
    # cells per unit: 60 units in 1, 60 in 3, 30 in 5; candidates 1, 2, 4 and the 5 declared
    for quantile, aimed in ((0.7, 4), (0.95, 5), (0.5, 4)):
        out = analyze_table(data, _spec(bounds=bounds, auto_bounds={"quantile": quantile}), 0)
        assert out["spec"]["max_partitions"] == aimed
        above = sum(u for k, u in ((1, 60), (3, 60), (5, 30)) if k > aimed) / 150
        assert out["cells_per_unit"]["share_of_units_above_max_partitions"] == pytest.approx(above)


def test_expected_drops_match_the_release_bounding_over_many_salts(data: Any) -> None:
    """The analysis' expected rows kept under (L0, Linf) is what bound_contributions keeps, on
    average over its random choice."""
    spec = _spec(bounds={"max_partitions": 1, "max_rows_per_partition": 2})
    out = analyze_table(data, spec, 0)
    entry = next(
        c
        for c in out["contribution_bounds"]
        if (c["max_partitions"], c["max_rows_per_partition"]) == (1, 2)
    )
    expected = (1 - entry["share_of_rows_dropped"]) * len(_rows())
    rng = random.Random(7)
    value = ValueColumn("v", 0.0, 10.0, 1.0)
    kept = []
    for _ in range(12):
        salt = tuple(rng.getrandbits(63) for _ in range(4))
        bounded = bound_contributions(data, "pid", ["g"], [value], 1, 2, salt)  # type: ignore[arg-type]
        kept.append(bounded.count())
    mean = sum(kept) / len(kept)
    # 60 + 60 * 5/3 + 30 * 2 = 220 rows in expectation; the mean of 12 draws is within a few
    assert expected == pytest.approx(220)
    assert abs(mean - expected) < 6, (mean, expected, kept)


def test_the_recommended_bounds_have_the_least_expected_error(data: Any) -> None:
    spec = _spec(
        bounds={"max_partitions": 5, "max_rows_per_partition": 5},
        metrics=["count", {"sum": "v", "lower": 0, "upper": 1000}],
    )
    out = analyze_table(data, spec, 0)
    rec = out["recommended"]
    best = min(
        out["contribution_bounds"],
        key=lambda c: c["expected_cell_error"]["count"],
    )
    assert (rec["max_partitions"], rec["max_rows_per_partition"]) == (
        best["max_partitions"],
        best["max_rows_per_partition"],
    )
    options = out["clamps"]["v"]
    chosen = next(o for o in options if (o["lower"], o["upper"]) == tuple(rec["v"].values()))
    spec_clamp = next(o for o in options if (o["lower"], o["upper"]) == (0.0, 1000.0))
    assert chosen["expected_cell_error"] == min(o["expected_cell_error"] for o in options)
    # clamping the five outliers costs less than the noise of an upper bound of 1000
    assert (
        rec["v"]["upper"] < 1000
        and chosen["expected_cell_error"] < spec_clamp["expected_cell_error"]
    )
    # the noise comes from the plan with those bounds
    planned = plan_release(spec).tables[0]
    sd = next(m for m in planned.measurements if m.column == "count").sd()[0]
    at_spec = next(
        c
        for c in out["contribution_bounds"]
        if (c["max_partitions"], c["max_rows_per_partition"]) == (5, 5)
    )
    assert at_spec["share_of_rows_dropped"] == 0
    assert at_spec["expected_cell_error"]["count"] == pytest.approx(sd)


def test_private_selection_counts_the_cells_expected_to_be_released(data: Any) -> None:
    spec = _spec(
        partitions={"type": "private", "strategy": "laplace"},
        bounds={"max_partitions": 1, "max_rows_per_partition": 1},
        metrics=["privacy_unit_count"],
    )
    out = analyze_table(data, spec, 0)
    entry = out["contribution_bounds"][0]
    assert (entry["max_partitions"], entry["max_rows_per_partition"]) == (1, 1)
    assert [c["max_rows_per_partition"] for c in out["contribution_bounds"]] == [1] * len(
        out["contribution_bounds"]
    )  # unit counts only: Linf changes nothing and is not varied
    sel = plan_release(spec).tables[0].selection
    assert sel is not None
    # expected units per cell with L0 = 1: 12 single-cell units per cell, 1/3 of the units
    # 60-119 in g0-g2, 1/5 of the units 120-149 in every cell
    units = [12 + 20 + 6] * 3 + [12 + 6] * 2
    expected = sum(sel.keep_probability(u) for u in units)
    assert entry["expected_cells_released"] == pytest.approx(expected)


def test_the_command_writes_only_to_the_private_directory_and_prints_no_statistic(
    data: Any, tmp_path: Path, capsys: Any
) -> None:
    data.write.parquet(str(tmp_path / "in"))
    doc = base_spec(domains={"g": CELLS})
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    doc["ledger"] = {"dataset": "d", "path": str(tmp_path / "ledger.sqlite")}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    assert cli.main(["analyze", str(tmp_path / "spec.yaml"), "--master", "local[1]"]) == 0
    printed = capsys.readouterr().out
    path = Path(re.search(r"analysis written to (\S+)", printed).group(1))  # type: ignore[union-attr]
    assert path.parent == tmp_path / "out" / ".private" / "analysis"
    assert re.search(r"\d", printed.replace(str(path), "")) is None  # no figure printed
    assert stat.S_IMODE(os.stat(tmp_path / "out" / ".private").st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".private"]  # no release
    assert not (tmp_path / "ledger.sqlite").exists()  # nothing charged, no ledger touched
    document = json.loads(path.read_text())
    assert document["tables"][0]["units"] == 150
    assert document["privacy"].startswith("NOT privacy-protected")
