"""Release series: six monthly periods through the command, the tree's error growth, the ledger's
one charge, periods in order and once, nodes drawn once across a crash, max_periods enforced."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from dp_ops.continual import level_weights, prefix_nodes, to_date_variance
from dp_ops.errors import BudgetError, SpecError
from jobs import runner, writer
from jobs.cli import main
from jobs.config import load_spec
from jobs.html_report import build_report
from jobs.ledger import Budget, Ledger
from jobs.plan_text import series_lines
from jobs.series import SeriesState
from jobs.storage import open_store
from tests.conftest import ROOT

G = [f"g{i:02d}" for i in range(25)]
H = [f"h{i:02d}" for i in range(20)]
MONTHS = [f"2027-{m:02d}" for m in range(1, 7)]
PERSONS = 3000


def month_rows(
    month: int, persons: Sequence[int] = range(PERSONS), seed: int = 0
) -> dict[str, list]:
    """One month of microdata: each person one row, in a cell that depends on person and
    month; values 0 .. 10."""
    rng = np.random.default_rng(seed * 100 + month)
    g = rng.integers(0, len(G), len(persons))
    h = rng.integers(0, len(H), len(persons))
    return {
        "pid": list(persons),
        "g": [G[i] for i in g],
        "h": [H[i] for i in h],
        "v": rng.integers(0, 11, len(persons)).astype(float).tolist(),
    }


def series_doc(tmp_path: Path, **series: Any) -> dict[str, Any]:
    return {
        "input": {
            "path": str(tmp_path / "in" / "{period}"),
            "format": "parquet",
            "privacy_unit": "pid",
            "validator": "spark",
        },
        "budget": {"rho": 0.5},
        "output": {"path": str(tmp_path / "out"), "nonnegative_counts": False},
        "domains": {"g": G, "h": H},
        "ledger": {"dataset": "sales", "path": str(tmp_path / "ledger.sqlite")},
        "series": {
            "name": "monthly",
            "period": "month",
            "start": "2027-01",
            "horizon": 6,
            **series,
        },
        "tables": [
            {
                "name": "by_cell",
                "dimensions": ["g", "h"],
                "partitions": {"type": "public", "keys": "cross_product"},
                "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                "metrics": ["count", {"sum": "v", "lower": 0, "upper": 10}],
            }
        ],
    }


def demo_series(spark: Any, tmp_path: Path, months: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """conf/series_monthly.yaml with its input, output and ledger under ``tmp_path`` (the spec
    written there, and its document), and a cohort of demo persons for each of ``months``."""
    from pipelines.demo_data import demo_microdata

    doc = yaml.safe_load((ROOT / "conf" / "series_monthly.yaml").read_text())
    doc["input"]["path"] = str(tmp_path / "in" / "{period}")
    doc["output"]["path"] = str(tmp_path / "out")
    doc["ledger"]["path"] = str(tmp_path / "ledger.sqlite")
    for cohort, month in enumerate(months, start=1):
        demo_microdata(spark, 2000, 1, cohort=cohort).write.parquet(str(tmp_path / "in" / month))
    return write_spec(tmp_path, doc), doc


def write_spec(tmp_path: Path, doc: dict[str, Any], name: str = "series.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def write_month(spark: Any, tmp_path: Path, month: int, rows: dict[str, list]) -> None:
    frame = spark.createDataFrame(pd.DataFrame(rows))
    frame.write.mode("overwrite").parquet(str(tmp_path / "in" / MONTHS[month - 1]))


def released(spark: Any, out: Path, period: str) -> Any:
    return spark.read.parquet(str(out / f"monthly-{period}" / "by_cell")).toPandas()


def exact_counts(rows: dict[str, list]) -> Any:
    frame = pd.DataFrame(rows)
    return frame.groupby(["g", "h"]).size()


def test_six_months_release_totals_to_date_whose_error_grows_with_the_tree_not_the_months(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(0), Fraction(0), Fraction(2)))
    spec = write_spec(tmp_path, series_doc(tmp_path, tree_levels=3))  # the full tree
    months = [month_rows(m) for m in range(1, 7)]
    running = None
    errors_to_date, errors_summed, sds = [], [], []
    summed_periods = None
    for m, rows in enumerate(months, start=1):
        write_month(spark, tmp_path, m, rows)
        assert main(["run", str(spec), "--period", MONTHS[m - 1]]) == 0
        exact = exact_counts(rows)
        running = exact if running is None else running.add(exact, fill_value=0)
        table = released(spark, tmp_path / "out", MONTHS[m - 1]).set_index(["g", "h"])
        table = table.reindex(running.index.union(table.index))
        assert len(table) == len(G) * len(H)
        truth = running.reindex(table.index, fill_value=0)
        errors_to_date.append((table["count_to_date"] - truth).to_numpy(dtype=float))
        period_values = table["count"].to_numpy(dtype=float)
        summed_periods = period_values if summed_periods is None else summed_periods + period_values
        errors_summed.append(summed_periods - truth.to_numpy(dtype=float))
        manifest = json.loads(
            (tmp_path / "out" / f"monthly-{MONTHS[m - 1]}" / "manifest.json").read_text()
        )
        entry = manifest["series"]
        assert entry["position"] == m and entry["to_date_nodes"] == [
            n.name for n in prefix_nodes(m, 6)
        ]
        count = next(x for x in entry["tables"][0]["metrics"] if x["name"] == "count")
        sds.append((count["period_sd"], count["to_date_sd"], count["summed_periods_sd"]))
        assert manifest["budget"]["spent"]["rho"] == pytest.approx(0.5)
    capsys.readouterr()
    node_sd = sds[0][0]
    for t, (errors, (period_sd, to_date_sd, _)) in enumerate(
        zip(errors_to_date, sds, strict=True), start=1
    ):
        assert period_sd == pytest.approx(node_sd)
        assert to_date_sd == pytest.approx(node_sd * np.sqrt(to_date_variance(t, 6)))
        if t > 1:  # the estimates beat the raw nodes: only month 1 is a leaf alone
            assert to_date_sd < node_sd * np.sqrt(len(prefix_nodes(t, 6)))
        # 500 cells: the empirical variance is within about 3 x 6% of the stated one
        assert np.var(errors) == pytest.approx(to_date_sd**2, rel=0.25), t
    # the tree's error after six months is that of two nodes; summing the six released months
    # has six nodes' worth: the growth is in the number of nodes, not of months
    assert np.var(errors_to_date[5]) < 0.55 * np.var(errors_summed[5])
    assert np.var(errors_summed[5]) == pytest.approx(6 * node_sd**2, rel=0.25)
    # a month's value and its total to date are one node where the tree says so
    first = released(spark, tmp_path / "out", MONTHS[0])
    assert (first["count"] == first["count_to_date"]).all()
    # after month 2: the estimate of node 1-0 from its measurement and its two months' values
    state = tmp_path / "out" / ".private" / "series" / "monthly" / "nodes" / "by_cell" / "1-0"
    pair = spark.read.parquet(str(state)).toPandas().set_index(["g", "h"])["count"]
    second = released(spark, tmp_path / "out", MONTHS[1]).set_index(["g", "h"])
    first = first.set_index(["g", "h"])
    weight = level_weights(3)[1][0]
    combined = weight * pair + (1 - weight) * (first["count"] + second["count"])
    assert (second["count_to_date"] - combined.reindex(second.index).round()).abs().max() == 0
    # the ledger: the series charged once, each month recorded at no further cost
    account = Ledger(tmp_path / "ledger.sqlite").account("sales")
    assert account.spent.rho == Fraction(1, 2)
    ids = [r[0] for r in account.releases]
    assert sorted(ids) == sorted(["series:monthly", *(f"monthly-{p}" for p in MONTHS)])
    # a month released again is a no-op; one outside the series is refused
    assert main(["run", str(spec), "--period", MONTHS[2]]) == 0
    assert "already exists" in capsys.readouterr().out
    assert Ledger(tmp_path / "ledger.sqlite").account("sales").spent.rho == Fraction(1, 2)
    assert main(["run", str(spec), "--period", "2027-07"]) == 2
    assert "outside the series" in capsys.readouterr().err
    page = build_report(tmp_path / "out" / "monthly-2027-06")
    assert "Series monthly" in page and "count_to_date: noise sd by period" in page


def test_periods_run_in_order_and_the_series_spec_cannot_change(spark: Any, tmp_path: Path) -> None:
    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(0), Fraction(0), Fraction(2)))
    doc = series_doc(tmp_path)
    spec = load_spec(write_spec(tmp_path, doc))
    with pytest.raises(BudgetError, match="release the periods in order"):
        runner.preflight(spec, "monthly-2027-02")
    with pytest.raises(SpecError, match="--period"):
        runner.preflight(spec, "2027-02")
    write_month(spark, tmp_path, 1, month_rows(1, range(200)))
    runner.run_release(spark, spec, "monthly-2027-01")
    changed = load_spec(write_spec(tmp_path, {**doc, "budget": {"rho": 0.4}}, "changed.yaml"))
    with pytest.raises(BudgetError, match="another spec"):
        runner.preflight(changed, "monthly-2027-02")
    # another input location per month (--input) is the same series
    moved = load_spec(write_spec(tmp_path, doc), input_path=str(tmp_path / "in" / "2027-01"))
    runner.preflight(moved, "monthly-2027-02")


def test_a_period_planned_with_another_tree_is_refused_before_it_reads_or_charges(
    spark: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    from pipelines import plan as plan_module
    from pipelines import series as series_module

    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(0), Fraction(0), Fraction(2)))
    spec = load_spec(write_spec(tmp_path, series_doc(tmp_path)))
    write_month(spark, tmp_path, 1, month_rows(1, range(200)))
    runner.run_release(spark, spec, "monthly-2027-01")
    root = tmp_path / "out" / ".private" / "series" / "monthly"
    recorded = json.loads((root / "tree.json").read_text())
    assert recorded == series_module.plan_series(spec).tree()
    assert (root / "tree.json").stat().st_mode & 0o077 == 0
    # a later dprelease choosing another depth for the same spec (the spec hash cannot see it)
    real = plan_module.series_depth
    other = 1 if real(spec) != 1 else 2
    for module in (plan_module, series_module):
        monkeypatch.setattr(module, "series_depth", lambda s: other)
    write_month(spark, tmp_path, 2, month_rows(2, range(200)))
    with pytest.raises(BudgetError, match=r"plans its tree otherwise.*depth"):
        runner.run_release(spark, spec, "monthly-2027-02")
    assert not (tmp_path / "out" / "monthly-2027-02").exists()
    assert not (root / "exact" / "by_cell" / "0-1").exists()  # nothing of the period was kept
    monkeypatch.undo()  # control: the tree the series was charged for runs the period
    runner.run_release(spark, spec, "monthly-2027-02")
    assert (tmp_path / "out" / "monthly-2027-02" / "manifest.json").exists()


def test_a_crashed_period_reuses_its_measured_nodes_whatever_the_input_says_on_the_retry(
    spark: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(0), Fraction(0), Fraction(2)))
    spec = load_spec(write_spec(tmp_path, series_doc(tmp_path)))
    write_month(spark, tmp_path, 1, month_rows(1, range(500)))

    def crash(*args: Any) -> None:
        raise RuntimeError("crash before the commit")

    monkeypatch.setattr(writer, "write_manifest", crash)
    with pytest.raises(RuntimeError):
        runner.run_release(spark, spec, "monthly-2027-01")
    monkeypatch.undo()
    node = tmp_path / "out" / ".private" / "series" / "monthly" / "nodes" / "by_cell" / "0-0"
    drawn = spark.read.parquet(str(node)).toPandas().set_index(["g", "h"])["count"]
    write_month(spark, tmp_path, 1, month_rows(1, range(1500), seed=7))  # the input changed
    runner.run_release(spark, spec, "monthly-2027-01")
    table = released(spark, tmp_path / "out", "2027-01").set_index(["g", "h"])
    assert table["count"].equals(drawn.reindex(table.index))
    # control: the changed input, measured afresh, would have released other values
    assert abs(table["count"].sum() - 1500) > abs(table["count"].sum() - 500)


def test_max_periods_drops_a_unit_from_the_periods_after_its_last(
    spark: Any, tmp_path: Path
) -> None:
    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(0), Fraction(0), Fraction(2)))
    spec = load_spec(write_spec(tmp_path, series_doc(tmp_path, horizon=4, max_periods=2)))
    old, new = range(2000), range(2000, 2600)
    totals = []
    for m, persons in ((1, old), (2, old), (3, [*old, *new])):
        write_month(spark, tmp_path, m, month_rows(m, persons))
        runner.run_release(spark, spec, f"monthly-{MONTHS[m - 1]}")
        totals.append(released(spark, tmp_path / "out", MONTHS[m - 1])["count"].sum())
    manifest = json.loads((tmp_path / "out" / "monthly-2027-03" / "manifest.json").read_text())
    count = next(x for x in manifest["series"]["tables"][0]["metrics"] if x["name"] == "count")
    slack = 5 * count["period_sd"] * np.sqrt(len(G) * len(H))
    assert abs(totals[0] - 2000) < slack and abs(totals[1] - 2000) < slack
    # the first 2000 used their two months: only the 600 new persons count in month 3
    assert abs(totals[2] - 600) < slack
    assert abs(totals[2] - 2600) > 3 * slack
    # the persons' digests are keyed in the Spark plan, by a key other than the noise key
    state = SeriesState(spark, open_store(str(tmp_path / "out"), spark), spec)
    admitted = state.admitted(spark.createDataFrame([(1,)], "pid long"), "pid", 3)  # kept: read
    plan_text = admitted._jdf.queryExecution().toString()
    assert state.key().hex() not in plan_text
    assert hashlib.sha256(b"dprelease series units|" + state.key()).hexdigest() in plan_text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ledger": None}, "charged once for all its periods"),
        ({"budget": {"epsilon": 1.0, "delta": 1e-6}}, "epsilon alone"),
        ({"noise": "laplace"}, "adds Gaussian noise"),
        ({"series": {"name": "m", "period": "week", "start": "2027-01", "horizon": 6}}, "period"),
        ({"series": {"name": "m", "period": "month", "start": "2027-1", "horizon": 6}}, "2027-03"),
        ({"series": {"name": "m", "period": "month", "start": "2027-01", "horizon": 0}}, ">= 1"),
        (
            {
                "series": {
                    "name": "m",
                    "period": "month",
                    "start": "2027-01",
                    "horizon": 6,
                    "max_periods": 7,
                }
            },
            "at most the horizon",
        ),
        (
            {
                "series": {
                    "name": "m",
                    "period": "month",
                    "start": "2027-01",
                    "horizon": 6,
                    "tree_levels": 4,
                }
            },
            "from 1 to 3",
        ),
        (
            {
                "tables": [
                    {
                        "name": "t",
                        "dimensions": ["g"],
                        "partitions": {"type": "public", "keys": "cross_product"},
                        "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
                        "metrics": [
                            {"quantiles": "v", "lower": 0, "upper": 10, "probabilities": [0.5]}
                        ],
                    }
                ]
            },
            "add up",
        ),
    ],
)
def test_series_specs_are_refused_with_what_to_change(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    from pipelines.spec import parse_spec

    doc = {**series_doc(tmp_path), **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    with pytest.raises(SpecError, match=message):
        parse_spec(doc)


def test_the_plan_of_a_series_states_its_tree_and_its_depth(tmp_path: Path) -> None:
    from pipelines.preview import preview
    from pipelines.spec import parse_spec

    everyone = preview(parse_spec(series_doc(tmp_path)))["series"]
    once = preview(parse_spec(series_doc(tmp_path, max_periods=1)))["series"]
    assert everyone["levels"] == 1  # each unit every month: summing months is more accurate
    assert once["levels"] == 2  # each unit in one month: the tree's nodes of two months help
    for s in (everyone, once):
        count = s["tables"][0]["metrics"][0]
        assert count["to_date_sd"] <= count["summed_periods_sd"] + 1e-9
    assert "series monthly: 6 months from 2027-01 to 2027-06" in "\n".join(series_lines(once))


def test_a_daily_series_of_a_total_written_as_csv(spark: Any, tmp_path: Path) -> None:
    """Another period kind (days, start read by YAML as a date), a table without dimensions,
    CSV output and an epsilon budget (Laplace): totals to date of three days."""
    Ledger(tmp_path / "ledger.sqlite").init("sales", Budget(Fraction(3), Fraction(0)))
    doc = series_doc(tmp_path, period="day", start="2027-02-27", horizon=3, tree_levels=2)
    doc["budget"] = {"epsilon": 2.0}
    doc["output"]["format"] = "csv"
    doc["tables"] = [
        {
            "name": "total",
            "partitions": {"type": "public", "keys": "cross_product"},
            "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
            "metrics": ["count"],
        }
    ]
    path = tmp_path / "daily.yaml"
    path.write_text(yaml.safe_dump(doc).replace("'2027-02-27'", "2027-02-27"))
    spec = load_spec(path)
    days = ["2027-02-27", "2027-02-28", "2027-03-01"]  # 2027 is not a leap year
    counts = []
    for i, day in enumerate(days):
        rows = month_rows(i + 1, range(i * 1000, i * 1000 + 400 * (i + 1)))
        spark.createDataFrame(pd.DataFrame(rows)).write.parquet(str(tmp_path / "in" / day))
        runner.run_release(spark, spec, f"monthly-{day}")
        table = pd.read_csv(next((tmp_path / "out" / f"monthly-{day}" / "total").glob("*.csv")))
        assert list(table.columns) == ["count", "count_to_date"] and len(table) == 1
        counts.append(table.iloc[0])
    scale = 2 * 3 / 2.0  # Laplace: K = 2 levels x 3 periods a person may have, over epsilon 2
    assert abs(counts[0]["count_to_date"] - 400) < 10 * scale
    assert abs(counts[2]["count_to_date"] - 2400) < 10 * scale
    account = Ledger(tmp_path / "ledger.sqlite").account("sales")
    assert account.spent.epsilon == Fraction(2)


def test_the_dataframe_api_sends_a_series_to_run_release(tmp_path: Path) -> None:
    from jobs.api import release_dataframes
    from pipelines.spec import parse_spec

    with pytest.raises(SpecError, match="run_release"):
        release_dataframes(parse_spec(series_doc(tmp_path)), spark=None)  # type: ignore[arg-type]
