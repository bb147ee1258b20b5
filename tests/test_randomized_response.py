"""Randomized-response surveys (``input.randomized_response``, the ``proportion`` metric): the
design's local epsilon, unbiased estimates whose intervals cover at their level (by
simulation, against a control without the design's correction), the same bits on the driver
and on Spark, answers other than 0 and 1 refused, and the demo generator's survey column."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from dp_ops.errors import SpecError
from dp_ops.keyed_stream import KeyedStreams, new_key
from dp_ops.randomized_response import Design, proportion_estimates
from dp_ops.samplers import discrete_laplace
from jobs import cli
from pipelines import noise as noise_module
from pipelines.demo_data import demo_microdata
from pipelines.plan import plan_release
from pipelines.release import Secrets
from pipelines.report import privacy_report
from pipelines.spec import RandomizedResponse, parse_spec
from tests.conftest import base_spec
from tests.test_release import release

DESIGN = {"column": "answer", "p_truth": 0.5, "p_yes": 0.5}


def _doc(cells: int = 3, design: dict[str, Any] | None = DESIGN, **budget: Any) -> dict[str, Any]:
    doc = base_spec(budget=budget or {"epsilon": 1.0}, noise="laplace")
    doc["domains"] = {"g": [str(i) for i in range(cells)]}
    doc["tables"][0]["metrics"] = [{"proportion": "answer"}]
    if design is not None:
        doc["input"]["randomized_response"] = design
    return doc


def test_the_design_states_its_local_epsilon_and_bad_designs_are_spec_errors() -> None:
    half = RandomizedResponse("a", Fraction(1, 2), Fraction(1, 2))
    assert half.local_epsilon == pytest.approx(math.log(3))  # P(yes | yes) 3/4, P(yes | no) 1/4
    warner = RandomizedResponse("a", Fraction(1, 2), Fraction(1, 10))
    assert warner.local_epsilon == pytest.approx(math.log(0.55 / 0.05))
    metric = parse_spec(_doc()).tables[0].metrics[0]
    assert metric.design is not None and metric.design.p_truth == Fraction(1, 2)
    assert metric.output_names == (
        "proportion_answer",
        "proportion_answer_se",
        "proportion_answer_low",
        "proportion_answer_high",
    )
    for bad, match in (
        ({**DESIGN, "p_truth": 1}, "p_truth: must lie in"),
        ({**DESIGN, "p_truth": 0}, "p_truth: must lie in"),
        ({**DESIGN, "p_yes": 1.0}, "p_yes: must lie in"),
        ({**DESIGN, "colour": 1}, "colour"),
        ([DESIGN, DESIGN], "lists a column twice"),
        ({**DESIGN, "column": "g"}, "privacy unit or a dimension"),
    ):
        with pytest.raises(SpecError, match=match):
            parse_spec(_doc(design=bad))


def test_estimates_are_unbiased_and_intervals_cover_at_their_level_by_simulation() -> None:
    """20,000 cells of 400 respondents with known true proportions, reports drawn by the design,
    counts and yes-sums noised by the plan's discrete Laplace: the released formula. Control:
    the share of yes reports, uncorrected, misses the truth."""
    rng = np.random.default_rng(11)
    cells, n = 20_000, 400
    plan = plan_release(parse_spec(_doc())).tables[0]
    sum_noise = next(m for m in plan.measurements if m.column != "count")
    count_noise = plan.noise_for("count")
    p_truth, p_yes = 0.5, 0.5
    design = Design((1 - p_truth) * p_yes, p_truth)
    truth = rng.integers(0, n + 1, size=cells) / n  # the cells' true proportions
    true_yes = (truth * n).astype(int)
    # each respondent: truthful with p_truth, else a coin with p_yes
    truthful = rng.random((cells, n)) < p_truth
    says_yes = np.where(
        truthful, np.arange(n)[None, :] < true_yes[:, None], rng.random((cells, n)) < p_yes
    )
    reports = says_yes.sum(axis=1)
    key = new_key()
    ids = np.stack([np.zeros(cells, dtype=np.uint64), np.arange(cells, dtype=np.uint64)], 1)
    noisy_sum = reports + discrete_laplace(KeyedStreams(key, ids), sum_noise.parameter)
    ids2 = ids.copy()
    ids2[:, 0] = 1
    noisy_n = n + discrete_laplace(KeyedStreams(key, ids2), count_noise.parameter)
    count = np.maximum(noisy_n, 1).astype(float)
    share = noisy_sum / count
    est, se, low, high = proportion_estimates(
        share,
        count,
        design,
        sum_noise.sd()[0] ** 2,
        count_noise.sd()[0] ** 2,
        1.959963984540054,
    )
    error = est - truth
    assert abs(error.mean()) < 4 * error.std() / math.sqrt(cells)  # unbiased
    assert np.std(error) == pytest.approx(np.mean(se), rel=0.05)  # the stated error is the error
    covered = np.mean((low <= truth) & (truth <= high))
    assert 0.94 <= covered <= 0.96, covered
    # control: the uncorrected share of yes reports is biased towards p_yes
    raw_low, raw_high = share - 1.96 * se * p_truth, share + 1.96 * se * p_truth
    assert np.mean((raw_low <= truth) & (truth <= raw_high)) < 0.5


@pytest.fixture(scope="module")
def survey(spark: Any) -> Any:
    """1,500 cells of 200 respondents, each cell with its own true proportion; one row per
    person; ``truth`` is kept beside for the test only (the spec never reads it)."""
    cells, per = 1500, 200
    pid = F.col("id")
    g = (pid % cells).cast("string")
    rate = (pid % cells).cast("double") / cells  # cell g's chance of a true yes
    truth = (F.rand(7) < rate).cast("int")
    frame = spark.range(cells * per).select(pid.alias("pid"), g.alias("g"), truth.alias("truth"))
    says = F.when(F.rand(8) < 0.5, F.col("truth")).otherwise((F.rand(9) < 0.5).cast("int"))
    frame = frame.withColumn("answer", says).cache()
    yield frame
    frame.unpersist()


def test_a_release_covers_each_cells_true_proportion_and_is_the_same_on_driver_and_spark(
    spark: Any, survey: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _doc(cells=1500, epsilon=2.0)
    doc["tables"][0]["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 1}
    secrets = Secrets.new()
    driver = release(spark, doc, survey, secrets=secrets)
    monkeypatch.setattr(noise_module, "DRIVER_MAX_CELLS", 0)
    on_spark = release(spark, doc, survey, secrets=secrets)
    assert_df_equality(driver, on_spark, ignore_row_order=True, ignore_nullable=True)
    truth = survey.groupBy("g").agg(F.avg("truth").alias("truth"))
    rows = driver.join(truth, "g").toPandas()
    assert len(rows) == 1500
    error = rows["proportion_answer"] - rows["truth"]
    assert abs(error.mean()) < 4 * error.std() / math.sqrt(len(rows))
    covered = (
        (rows["proportion_answer_low"] <= rows["truth"])
        & (rows["truth"] <= rows["proportion_answer_high"])
    ).mean()
    assert 0.925 <= covered <= 0.975, covered  # 95%, within 4.5 sd of sampling over 1,500 cells


def test_answers_other_than_0_and_1_are_refused(spark: Any, tmp_path: Path, capsys: Any) -> None:
    import yaml

    rows = [(1, "0", 1), (2, "1", 0), (3, "2", 2)]
    spark.createDataFrame(rows, "pid long, g string, answer int").write.parquet(
        str(tmp_path / "in")
    )
    doc = _doc()
    doc["input"]["path"] = str(tmp_path / "in")
    doc["output"]["path"] = str(tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    code = cli.main(["run", str(tmp_path / "spec.yaml"), "--master", "local[1]"])
    assert code == 3
    assert "answer is 0 or 1" in capsys.readouterr().err


def test_the_manifest_states_the_local_and_the_central_guarantee() -> None:
    report = privacy_report(plan_release(parse_spec(_doc())))
    local = report["randomized_response"]["columns"]["answer"]
    assert local["local_epsilon"] == pytest.approx(math.log(3)) and local["p_truth"] == 0.5
    (metric,) = report["tables"][0]["metrics"]
    assert metric["randomized_response"]["local_epsilon"] == pytest.approx(math.log(3))
    assert metric["columns"][1] == "proportion_answer_se"
    assert report["spent"]["epsilon"] == 1.0  # the central budget, as declared


def test_a_proportion_without_a_design_is_the_noisy_share_with_its_noise_error(
    spark: Any, survey: Any
) -> None:
    doc = _doc(cells=1500, design=None, epsilon=2.0)
    doc["tables"][0]["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 1}
    rows = release(spark, doc, survey, secrets=Secrets.new()).toPandas()
    truth = survey.groupBy("g").agg(F.avg("answer").alias("share")).toPandas()
    rows = rows.merge(truth, on="g")
    error = rows["proportion_answer"] - rows["share"]
    assert abs(error.mean()) < 4 * error.std() / math.sqrt(len(rows))
    assert error.std() == pytest.approx(rows["proportion_answer_se"].mean(), rel=0.15)


def test_generate_demo_writes_a_randomized_response_column(spark: Any, tmp_path: Path) -> None:
    df = demo_microdata(spark, 30_000, randomized_response=True)
    per_person = df.groupBy("person_id").agg(F.countDistinct("answered_yes").alias("k"))
    assert per_person.where("k > 1").count() == 0  # one answer per person, on every row
    out = tmp_path / "demo"
    gen = ["generate-demo", "--output", str(out), "--rows", "2000", "--randomized-response"]
    assert cli.main([*gen, "--master", "local[1]"]) == 0
    table = pq.read_table(out)
    values = set(table.column("answered_yes").to_pylist())
    assert values == {0, 1}
