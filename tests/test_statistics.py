"""Histograms over declared bins and quantiles read from a histogram over a public grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from dp_ops.errors import SpecError
from pipelines.plan import histograms, plan_release
from pipelines.release import Secrets
from pipelines.spec import parse_spec
from tests.conftest import base_spec
from tests.test_release import release

EDGES = [0, 10, 20, 50, 100]


def doc_with(metrics: list[Any], **bounds: int) -> dict[str, Any]:
    doc = base_spec(budget={"epsilon": 2.0, "delta": 1e-6}, domains={"g": ["a", "b", "c"]})
    doc["tables"][0]["metrics"] = metrics
    doc["tables"][0]["bounds"] = {"max_partitions": 1, "max_rows_per_partition": 1, **bounds}
    return doc


def data(spark: Any) -> tuple[Any, pd.DataFrame]:
    rng = np.random.default_rng(5)
    n = 3000
    frame = pd.DataFrame(
        {
            "pid": np.arange(n),
            "g": rng.choice(["a", "b", "c"], n),
            "v": np.round(rng.gamma(2.0, 15.0, n), 3),  # some values above the last edge
        }
    )
    return spark.createDataFrame(frame), frame


def test_histograms_and_quantiles_are_exact_without_noise(spark: Any) -> None:
    metrics = [
        {"histogram": "v", "bins": EDGES},
        {"quantiles": "v", "probabilities": [0.5, 0.9], "lower": 0, "upper": 100, "bins": 50},
    ]
    df, frame = data(spark)
    got = release(spark, doc_with(metrics), df, noise=False).toPandas().set_index("g")
    clamped = frame.assign(v=frame["v"].clip(0, 100))
    bins = pd.cut(clamped["v"], EDGES, right=False, labels=False).fillna(len(EDGES) - 2)
    want = clamped.assign(b=bins.astype(int)).groupby(["g", "b"]).size().unstack(fill_value=0)
    for i in range(len(EDGES) - 1):
        assert (got[f"hist_v_{i}"] == want[i].reindex(got.index)).all(), i
    for p, column in ((0.5, "p50_v"), (0.9, "p90_v")):
        truth = clamped.groupby("g")["v"].quantile(p)
        assert (np.abs(got[column] - truth.reindex(got.index)) <= 2.0).all()  # one grid step


def test_a_histogram_is_one_measurement_with_the_sensitivity_of_a_count() -> None:
    plan = plan_release(
        parse_spec(doc_with([{"histogram": "v", "bins": EDGES}, "count"], max_rows_per_partition=3))
    )
    (t,) = plan.tables
    (h,) = histograms(t.table)
    m = t.noise_for(h.measure)
    assert m.sensitivity == t.noise_for("count").sensitivity  # 3 rows in at most 3 bins
    assert sum(x.epsilon for x in t.measurements) == t.epsilon == 2  # two measurements, not five


def test_each_bin_gets_its_own_noise_with_the_planned_spread(spark: Any) -> None:
    df = spark.range(40_000).select(
        (F.col("id") % 1000).cast("string").alias("g"),
        F.col("id").alias("pid"),
        ((F.col("id") % 97) * 1.0).alias("v"),
    )
    doc = doc_with([{"histogram": "v", "bins": EDGES}])
    doc["domains"] = {"g": [str(i) for i in range(1000)]}
    secrets = Secrets.new()
    noisy = release(spark, doc, df, secrets=secrets).toPandas().set_index("g").sort_index()
    exact = release(spark, doc, df, noise=False).toPandas().set_index("g").sort_index()
    diffs = np.concatenate([(noisy[c] - exact[c]).to_numpy() for c in noisy.columns])
    plan = plan_release(parse_spec(doc))
    (h,) = histograms(plan.tables[0].table)
    sd, _ = plan.tables[0].noise_for(h.measure).sd()
    clamped = np.maximum(diffs, -exact.to_numpy().ravel(order="F"))  # counts clamp at zero
    assert 0.8 < np.std(diffs) / sd < 1.25, (np.std(diffs), sd, clamped.min())
    assert (
        np.corrcoef(
            (noisy["hist_v_0"] - exact["hist_v_0"]), (noisy["hist_v_1"] - exact["hist_v_1"])
        )[0, 1]
        < 0.2
    )


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"histogram": "v", "bins": [0]}, "at least two bin edges"),
        ({"histogram": "v", "bins": [0, 5, 5]}, "edges must increase"),
        (
            {"quantiles": "v", "probabilities": [0.5, 1.0], "lower": 0, "upper": 1},
            "strictly between",
        ),
        ({"quantiles": "v", "probabilities": [0.5], "lower": 1, "upper": 1}, "must be below upper"),
        ({"quantiles": "v", "lower": 0, "upper": 1}, "probabilities: is required"),
    ],
)
def test_bad_histograms_are_spec_errors(metric: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(doc_with([metric]))


def test_variance_and_standard_deviation_are_exact_without_noise(spark: Any) -> None:
    metrics = [
        {"variance": "v", "lower": 0, "upper": 100},
        {"stddev": "v", "lower": 0, "upper": 100},
        {"mean": "v", "lower": 0, "upper": 100},
    ]
    df, frame = data(spark)
    got = release(spark, doc_with(metrics), df, noise=False).toPandas().set_index("g")
    clamped = frame.assign(v=frame["v"].clip(0, 100)).groupby("g")["v"]
    want = clamped.var(ddof=0).reindex(got.index)
    assert np.allclose(got["variance_v"], want, rtol=1e-3)
    assert np.allclose(got["stddev_v"], np.sqrt(want), rtol=1e-3)
    plan = plan_release(parse_spec(doc_with(metrics)))
    columns = sorted(m.column for m in plan.tables[0].measurements)
    assert columns == ["count", "s_v", "ss_v"]  # count, sum and squares: three measurements


def test_a_noisy_variance_stays_in_its_range(spark: Any) -> None:
    df, frame = data(spark)
    doc = doc_with([{"stddev": "v", "lower": 0, "upper": 100}])
    got = release(spark, doc, df).toPandas().set_index("g")
    truth = frame.assign(v=frame["v"].clip(0, 100)).groupby("g")["v"].std(ddof=0)
    assert ((got["stddev_v"] >= 0) & (got["stddev_v"] <= 50)).all()
    assert (np.abs(got["stddev_v"] - truth.reindex(got.index)) < 5).all()  # ~1,000 per cell


@pytest.mark.parametrize(("lower", "upper"), [(0, 100), (-30, 5), (10, 11)])
def test_a_row_adds_at_most_the_squares_sensitivity(spark: Any, lower: float, upper: float) -> None:
    """The planned sensitivity of the squares holds for every row: 0 <= row <= SQUARE_STEPS."""
    from pipelines.plan import SQUARE_STEPS
    from pipelines.release import square_steps

    doc = doc_with([{"variance": "v", "lower": lower, "upper": upper}], max_rows_per_partition=3)
    plan = plan_release(parse_spec(doc)).tables[0]
    sq = plan.squares_of("v")
    sens = plan.noise_for(sq.measure).sensitivity
    assert (sens.per_partition, sens.partitions) == (3 * SQUARE_STEPS, 1)  # L-inf rows of one
    values = [-1e9, lower - 1.0, lower, (lower + upper) / 2, upper, upper + 1.0, 1e9, 0.0]
    df = spark.createDataFrame([(float(x),) for x in values], "v double")
    steps = [r[0] for r in df.select(square_steps(sq)).collect()]
    assert min(steps) >= 0 and max(steps) <= SQUARE_STEPS
    assert max(steps) == SQUARE_STEPS  # a value at the farther bound uses the whole grid
