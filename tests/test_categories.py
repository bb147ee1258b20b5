"""Modes and top-k categories per cell (``{mode: col, categories}``, ``{top_k: col, k,
categories}``; dp_ops.top_k through the release engine): parsed and charged inside the table's
budget, the right categories named where the lead is large, the same bits on the driver and on
Spark, a name for empty cells too, the manifest's statement, and the audit command with a
broken engine that must be caught."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import functions as F

from dp_ops.errors import SpecError
from jobs import cli
from pipelines import noise as noise_module
from pipelines.plan import plan_release
from pipelines.release import Secrets
from pipelines.spec import parse_spec
from tests.conftest import base_spec
from tests.test_release import release

LANGS = ["en", "fr", "de", "it"]


def _doc(budget: dict[str, Any] | None = None, **table: Any) -> dict[str, Any]:
    doc = base_spec(budget=budget or {"epsilon": 2.0}, noise="laplace")
    doc["domains"] = {"g": ["a", "b", "c", "d"]}
    doc["tables"][0]["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 2}
    doc["tables"][0]["metrics"] = [
        "count",
        {"mode": "lang", "categories": LANGS},
        {"top_k": "lang", "k": 2, "categories": LANGS},
    ]
    doc["tables"][0].update(table)
    return doc


def test_categorical_metrics_parse_and_bad_ones_are_spec_errors() -> None:
    t = parse_spec(_doc()).tables[0]
    mode, top = t.metrics[1], t.metrics[2]
    assert mode.categories == tuple(LANGS) and mode.output_names == ("mode_lang",)
    assert top.output_names == ("top1_lang", "top2_lang")
    for metric, match in (
        ({"top_k": "lang", "k": 4, "categories": LANGS}, "below the number of categories"),
        ({"mode": "lang", "categories": ["en"]}, "at least two categories"),
        ({"mode": "lang", "categories": ["en", "en"]}, "twice"),
        ({"mode": "lang", "categories": [True, False]}, "text or whole numbers"),
        ({"mode": "lang", "categories": LANGS, "lower": 0}, "lower"),
    ):
        with pytest.raises(SpecError, match=match):
            parse_spec(_doc(metrics=["count", metric]))
    with pytest.raises(SpecError, match="needs the cell's count beside it"):
        parse_spec(_doc(metrics=[{"mode": "lang", "categories": LANGS}]))


@pytest.mark.parametrize("budget", [{"epsilon": 2.0}, {"rho": 0.5}])
def test_modes_are_paid_from_the_tables_budget(budget: dict[str, Any]) -> None:
    plan = plan_release(parse_spec(_doc(budget)))
    (t,) = plan.tables
    # two categorical metrics beside one noised measurement (count): 2/3 of the table
    if "rho" in budget:
        assert t.choice_epsilon**2 / 2 <= Fraction(1, 3)
        assert t.zcdp_cost is not None and t.zcdp_cost <= Fraction(1, 2)
    else:
        assert t.choice_epsilon == Fraction(4, 3) and t.measurement_epsilon == Fraction(2, 3)
        assert t.cell_epsilon(t.table.metrics[1]) == Fraction(2, 3)
        assert plan.cost.epsilon == 2
    wider = _doc(budget, bounds={"max_partitions": 2, "max_rows_per_partition": 2})
    (w,) = plan_release(parse_spec(wider)).tables
    assert w.cell_epsilon(w.table.metrics[1]) == t.cell_epsilon(t.table.metrics[1]) / 2


@pytest.fixture(scope="module")
def speakers(spark: Any) -> Any:
    """Cells a, b, c: 600 persons each, 60% en, 30% fr, 10% de; cell d is empty."""
    pid = F.col("id")
    lang = F.when(pid % 10 < 6, "en").when(pid % 10 < 9, "fr").otherwise("de")
    cell = F.element_at(F.array(*[F.lit(x) for x in "abc"]), (F.floor(pid / 600) + 1).cast("int"))
    frame = spark.range(1800).select(
        pid.alias("pid"), cell.alias("g"), lang.alias("lang"), F.lit(1.0).alias("v")
    )
    frame = frame.cache()
    yield frame
    frame.unpersist()


def test_large_leads_name_the_right_categories_the_same_on_driver_and_spark(
    spark: Any, speakers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = Secrets.new()
    driver = release(spark, _doc(), speakers, secrets=secrets)
    monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
    on_spark = release(spark, _doc(), speakers, secrets=secrets)
    assert_df_equality(driver, on_spark, ignore_row_order=True, ignore_nullable=True)
    rows = {r["g"]: r for r in driver.collect()}
    for g in "abc":  # leads of 180 rows and more: e^-60 odds against at 1/3 per pick
        assert (rows[g]["mode_lang"], rows[g]["top1_lang"], rows[g]["top2_lang"]) == (
            "en",
            "en",
            "fr",
        )
    empty = rows["d"]  # an empty public cell still names categories: nothing says it is empty
    assert empty["mode_lang"] in LANGS and empty["top1_lang"] != empty["top2_lang"]


def test_with_a_small_budget_the_mode_is_a_draw_not_the_truth(spark: Any, speakers: Any) -> None:
    """Control: at a tiny epsilon the mechanism must not always name the true mode; over 40
    releases of three cells, other categories appear."""
    doc = _doc({"epsilon": 0.001})
    names = set()
    for _ in range(40):
        names |= {
            r["mode_lang"] for r in release(spark, doc, speakers, secrets=Secrets.new()).collect()
        }
    assert len(names) >= 3


def test_the_manifest_states_the_mechanism_and_the_lead_it_needs(
    spark: Any, speakers: Any, tmp_path: Path
) -> None:
    speakers.write.parquet(str(tmp_path / "in"))
    doc = _doc()
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    run = ["run", str(tmp_path / "spec.yaml"), "--release-id", "r", "--master", "local[1]"]
    assert cli.main(run) == 0
    manifest = json.loads((tmp_path / "out" / "r" / "manifest.json").read_text())
    (table,) = manifest["tables"]
    mode = next(m for m in table["metrics"] if m["kind"] == "mode")
    assert mode["epsilon_per_cell"] == pytest.approx(2 / 3) and "clamp" not in mode
    probabilities = mode["probability_first_is_the_mode"]
    assert probabilities["1"] < probabilities["10"] < probabilities["100"] <= 1
    assert 0 < mode["lead_for_95_percent"] < 100
    assert table["budget"]["categories_epsilon"] == pytest.approx(4 / 3)
    released = pq.read_table(tmp_path / "out" / "r" / "t").to_pandas()
    assert set(released.columns) == {"g", "count", "mode_lang", "top1_lang", "top2_lang"}
    assert released["mode_lang"].isin(LANGS).all()


def _audit(tmp_path: Path, capsys: Any) -> tuple[int, dict[str, Any]]:
    doc = _doc({"epsilon": 3.0})
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(doc))
    args = ["audit", str(tmp_path / "audit.yaml"), "--replicates", "40000", "--json"]
    code = cli.main([*args, "--master", "local[1]"])
    out = json.loads(capsys.readouterr().out)
    return code, {r["measurement"]: r for r in out["measurements"]}


@pytest.mark.slow
def test_the_audit_keeps_the_claims_of_modes_and_top_ks(
    spark: Any, tmp_path: Path, capsys: Any
) -> None:
    code, rows = _audit(tmp_path, capsys)
    for name in ("mode_lang", "top1_lang"):
        r = rows[name]
        assert r["mechanism"] == "exponential_mechanism"
        assert r["epsilon_lower_bound"] <= r["claimed_epsilon"] < r["control_lower_bound"], r
    assert rows["top1_lang"]["claimed_epsilon"] == pytest.approx(0.5)  # 1 per cell, 2 picks
    assert code == 0


@pytest.mark.slow
def test_a_mode_drawn_at_twice_its_epsilon_is_reported_with_exit_6(
    spark: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import release

    honest = release.noise_jobs

    def broken(plan: Any) -> Any:
        return honest(
            plan.__class__(**{**plan.__dict__, "choice_epsilon": 2 * plan.choice_epsilon})
        )

    monkeypatch.setattr(release, "noise_jobs", broken)
    code, rows = _audit(tmp_path, capsys)
    assert code == 6 and rows["mode_lang"]["exceeded"], rows["mode_lang"]
