"""Table suites on Spark: every table at every geographic level from one least-squares estimate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from dp_ops import marginals
from jobs.runner import public_keys, table_frames
from pipelines import suite as suite_module
from pipelines.plan import plan_release
from pipelines.release import Secrets
from pipelines.spec import parse_spec

COUNTIES = [("01", "01001"), ("01", "01002"), ("02", "02001"), ("02", "02002"), ("02", "02003")]
SEXES, AGES = ["F", "M"], ["a", "b", "c"]


def suite_doc(**change: Any) -> dict[str, Any]:
    table = {
        "name": "p",
        "dimensions": ["state", "county", "sex", "age_group"],
        "geography": [[], ["state"], ["state", "county"]],
        "margins": [["sex"], []],
        "partitions": {"type": "public", "keys": [list(c) for c in COUNTIES]},
        "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
        "metrics": ["privacy_unit_count"],
    }
    table.update(change)
    return {
        "input": {"path": "unused", "privacy_unit": "pid"},
        "budget": {"rho": 1.0},
        "noise": "gaussian",
        "output": {"path": "unused"},
        "domains": {"state": ["01", "02"], "sex": SEXES, "age_group": AGES},
        "tables": [table],
    }


def persons(spark: Any, n: int = 2000, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    where = rng.integers(0, len(COUNTIES), n)
    rows = [
        (i, *COUNTIES[where[i]], SEXES[rng.integers(0, 2)], AGES[rng.integers(0, 3)])
        for i in range(n)
    ]
    return spark.createDataFrame(
        rows, "pid long, state string, county string, sex string, age_group string"
    )


def _release(spark: Any, doc: dict[str, Any], df: Any, secrets: Secrets) -> dict[str, Any]:
    spec = parse_spec(doc)
    (t,) = plan_release(spec).tables
    return table_frames(spec, t, df, secrets, public_keys(spark, spec, t.table, df))


def test_spark_least_squares_equals_the_numpy_reference(spark: Any) -> None:
    """The level-by-level passes on Spark give, unit by unit, the estimate of
    dp_ops.marginals (itself checked against the dense solution) from the same noisy
    measurements, on an irregular geography (states of 2 and 3 counties)."""
    df = persons(spark)
    spec = parse_spec(suite_doc())
    (plan,) = plan_release(spec).tables
    keys = public_keys(spark, spec, plan.table, df)
    assert keys is not None
    domains = (("sex", tuple(SEXES)), ("age_group", tuple(AGES)))
    suite = suite_module._Suite(plan, suite_module.SuiteKeys(keys.frame, domains), df.schema)
    grid = suite.grid(suite.attrs, suite_module.CELL)
    secrets = Secrets.new()
    cells = suite_module.bounded_aggregates(df, plan, "pid", secrets)
    measured = suite_module._measure(
        suite, suite_module._finest(suite, cells, secrets, grid), secrets
    )
    solved = suite_module._solve(suite)
    final = suite_module._least_squares(
        suite, suite_module._unit_rows(suite, measured, solved), solved
    )
    # the reference, unit by unit: nation, states, counties in key order
    units = [(), ("01",), ("02",), *COUNTIES]
    parent = [-1, 0, 0, 1, 1, 2, 2, 2]
    depth = [0, 1, 1, 2, 2, 2, 2, 2]
    metric = "privacy_unit_count"
    geo = suite.geo
    eta = []
    for v, key in enumerate(units):
        g = depth[v]
        ys = []
        for q, query in enumerate(suite.queries):
            frame = measured[(g, q)].toPandas()
            for col, value in zip(geo[g], key, strict=True):
                frame = frame[frame[col] == value]
            order = [SEXES, AGES]
            positions = {"sex": 0, "age_group": 1}
            idx = np.zeros(len(frame), dtype=int)
            for a in query:
                idx = (
                    idx * len(order[positions[a]])
                    + frame[a].map(order[positions[a]].index).to_numpy()
                )
            y = np.zeros(marginals.query_cells((2, 3), suite.query_positions[q]))
            y[idx] = frame[suite.column(metric, g, q)].to_numpy()
            ys.append(y[None, :])
        eta.append(solved.measures[metric][g].eta((2, 3), ys)[0])
    structure = marginals.solve_structure(parent, (2, 3), solved.measures[metric])
    _, _, want = marginals.estimate(parent, structure, np.array(eta))
    for v, key in enumerate(units):
        frame = final[depth[v]].toPandas()
        for col, value in zip(geo[depth[v]], key, strict=True):
            frame = frame[frame[col] == value]
        (got,) = frame[f"_final_{metric}"].tolist()
        np.testing.assert_allclose(got, want[v], rtol=1e-9, atol=1e-9)


def test_every_table_of_a_suite_is_a_sum_of_its_finest_integer_table(spark: Any) -> None:
    df = persons(spark)
    doc = suite_doc(metrics=["privacy_unit_count", "count"])
    spec = parse_spec(doc)
    out = _release(spark, doc, df, Secrets.new())
    t = spec.tables[0]
    assert list(out) == [name for name, _ in t.outputs]
    read = {name: frame.toPandas() for name, frame in out.items()}
    finest = read["p"]
    assert len(finest) == len(COUNTIES) * 2 * 3  # every unit x attribute cell
    for name, dims in t.outputs:
        table = read[name]
        for m in ("privacy_unit_count", "count"):
            assert table[m].dtype == "int64" and (table[m] >= 0).all()
            sd = table[f"{m}_sd"]
            assert (sd > 0).all() and np.allclose(table[f"{m}_halfwidth"], 1.959964 * sd, rtol=1e-5)
            if dims:
                want = finest.groupby(list(dims))[m].sum()
                got = table.set_index(list(dims))[m].reindex(want.index)
                assert (got == want).all(), name
            else:
                assert table[m].iloc[0] == finest[m].sum()
    # least squares only lowers the error: every county cell below its own measurement's noise
    (plan,) = plan_release(spec).tables
    raw = plan.noise_for("privacy_unit_count").sd()[0]
    assert (finest["privacy_unit_count_sd"] < raw).all()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if frame[c].dtype == object]
    return frame.sort_values(keys).reset_index(drop=True) if keys else frame


@pytest.mark.parametrize("geography", [[["state"], ["state", "county"]], [[], ["state", "county"]]])
def test_a_suite_is_the_same_on_the_driver_and_on_spark_however_partitioned(
    spark: Any, monkeypatch: Any, geography: list[list[str]]
) -> None:
    """Noise keyed per cell, sums added in key order, products without BLAS: a release on the
    driver (few cells) and the same release through Spark's passes (forced by a zero driver
    limit), with other shuffle partitions, give the same tables, bit for bit."""
    df = persons(spark, n=600, seed=3)
    doc = suite_doc(geography=geography, margins=[["sex"]], metrics=["privacy_unit_count", "count"])
    secrets = Secrets.new()
    ways = []
    on_driver = suite_module._on_driver

    def spy(*args: Any) -> Any:
        ways.append(True)
        return on_driver(*args)

    monkeypatch.setattr(suite_module, "_on_driver", spy)
    first = {k: _sorted(v.toPandas()) for k, v in _release(spark, doc, df, secrets).items()}
    assert ways == [True]
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        with monkeypatch.context() as m:
            m.setattr(suite_module.noising, "DRIVER_MAX_CELLS", 0)
            second = _release(spark, doc, df.repartition(5), secrets)
            assert ways == [True]  # control: Spark's way ran
            for name, frame in second.items():
                pd.testing.assert_frame_equal(
                    _sorted(frame.toPandas()), first[name], check_dtype=False
                )
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    other = _release(spark, doc, df, Secrets.new())["p"].toPandas()  # control: a new key
    assert not _sorted(other).equals(first["p"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"margins": [["sex"]]}, "needs geography"),
        ({"geography": [["state"], ["county"]]}, "nested in the next"),
        ({"geography": [["state", "county", "sex", "age_group"]]}, "leaves no attribute"),
        ({"geography": [["state"]], "margins": [["state"]]}, "attribute dimensions"),
        ({"geography": [["state", "county"]], "margins": [["sex", "age_group"]]}, "detailed"),
        ({"geography": [["state"]], "margins": [["sex"], ["sex"]]}, "twice"),
        ({"geography": [["state"]], "levels": [["state"]]}, "not both"),
        ({"geography": [["state"]], "metrics": [{"sum": "v", "lower": 0, "upper": 1}]}, "count"),
    ],
)
def test_bad_suites_are_spec_errors(change: dict[str, Any], message: str) -> None:
    from dp_ops.errors import SpecError

    doc = suite_doc()
    table = doc["tables"][0]
    table.pop("geography")
    table.pop("margins")
    table.update(change)
    with pytest.raises(SpecError, match=message):
        parse_spec(doc)


def test_a_suite_needs_domains_for_its_attributes() -> None:
    from dp_ops.errors import SpecError

    doc = suite_doc()
    del doc["domains"]["age_group"]
    with pytest.raises(SpecError, match=r"domains\.age_group"):
        parse_spec(doc)
    doc = suite_doc()
    doc["domains"]["age_group"] = list(range(600))
    with pytest.raises(SpecError, match="coarsen"):
        parse_spec(doc)


class _Conf:
    def __init__(self, value: str | None) -> None:
        self.values = {} if value is None else {"spark.sql.maxPlanStringLength": value}

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "1000000"),  # unbounded: limited
        ("2147483632", "1000000"),
        ("4g", "1000000"),
        ("64k", "64k"),  # a lower limit stays
        ("5000", "5000"),
    ],
)
def test_a_suite_bounds_the_plan_text_unless_the_session_has_a_lower_limit(
    before: str | None, after: str
) -> None:
    from pipelines.spark_compat import bound_plan_strings

    session = type("Session", (), {"conf": _Conf(before)})()
    bound_plan_strings(session)
    assert session.conf.get("spark.sql.maxPlanStringLength") == after
