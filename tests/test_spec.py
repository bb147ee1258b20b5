"""The release spec: every bad key is rejected with a message naming it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from dp_ops.errors import SpecError
from pipelines.spec import PrivatePartitions, parse_spec
from tests.conftest import base_spec


def with_table(**changes: Any) -> dict[str, Any]:
    doc = base_spec()
    doc["tables"][0].update(changes)
    return doc


def test_a_valid_spec_parses_into_frozen_objects() -> None:
    spec = parse_spec(base_spec())
    assert spec.tables[0].metrics[1].column == "v"
    assert spec.tables[0].metrics[1].granularity is not None
    with pytest.raises(AttributeError):
        spec.budget.epsilon = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (base_spec(budget={"epsilon": 0}), r"budget\.epsilon: must be > 0"),
        (base_spec(budget={"epsilon": -1}), r"budget\.epsilon: must be > 0"),
        (base_spec(budget={"epsilon": 1, "delta": 1.0}), r"budget\.delta: must lie in \[0, 1\)"),
        (base_spec(budget={"epsilon": 1, "delta": -0.1}), r"budget\.delta: must lie in \[0, 1\)"),
        (base_spec(budget={"epsilon": "one"}), r"budget\.epsilon: must be a number"),
        (base_spec(budget={"epsilon": float("inf")}), r"budget\.epsilon: must be a number"),
        (
            with_table(metrics=["median"]),
            r"tables\[0\]\.metrics\[0\]: must be one of count, privacy_unit_count",
        ),
        (
            with_table(metrics=[{"median": "v"}]),
            r"tables\[0\]\.metrics\[0\]: must name exactly one metric",
        ),
        (
            with_table(metrics=[{"sum": "v", "lower": 5, "upper": 1}]),
            r"tables\[0\]\.metrics\[0\]\.lower: must be below upper",
        ),
        (
            with_table(metrics=["count", {"mean": "v", "lower": 5, "upper": 5}]),
            r"tables\[0\]\.metrics\[1\]\.lower: must be below upper \(5\.0 >= 5\.0\)",
        ),
        (
            with_table(metrics=[{"sum": "v", "lower": 0, "upper": 1e9, "granularity": 1e-9}]),
            r"tables\[0\]\.metrics\[0\]\.granularity: too fine for the bounds: 1e\+18 steps",
        ),
        (
            with_table(metrics=[{"sum": "v", "upper": 1}]),
            r"tables\[0\]\.metrics\[0\]\.lower: is required",
        ),
        (
            with_table(bounds={"max_partitions": 0, "max_rows_per_partition": 1}),
            r"bounds\.max_partitions: must be",
        ),
        (with_table(name="bad name"), r"tables\[0\]\.name: must be a name"),
        (with_table(colour="red"), r"tables\[0\]\.colour: unknown key"),
        (base_spec(domains={}), r"cross_product needs domains\.g"),
        (
            base_spec(noise="gaussian", budget={"epsilon": 1}),
            r"noise: gaussian noise needs budget\.delta > 0",
        ),
        (with_table(dimensions=["pid"]), r"must not contain the privacy unit column"),
        (with_table(metrics=["count", "count"]), r"lists the same metric twice"),
    ],
)
def test_bad_specs_name_the_key(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_spec(doc)


def test_private_partitions_need_delta() -> None:
    doc = with_table(partitions={"type": "private"})
    doc["budget"] = {"epsilon": 1.0}
    with pytest.raises(
        SpecError, match=r"tables\[0\]\.partitions: private selection needs budget\.delta > 0"
    ):
        parse_spec(doc)
    ok = copy.deepcopy(doc)
    ok["budget"]["delta"] = 1e-6
    assert isinstance(parse_spec(ok).tables[0].partitions, PrivatePartitions)


def test_inline_keys_need_one_value_per_dimension() -> None:
    doc = with_table(partitions={"type": "public", "keys": [["a", "b"]]})
    with pytest.raises(SpecError, match=r"keys\[0\]: needs 1 values"):
        parse_spec(doc)


def test_the_demo_spec_is_valid() -> None:
    from jobs.config import load_spec
    from tests.conftest import ROOT

    spec = load_spec(ROOT / "conf" / "demo.yaml")
    assert {t.name for t in spec.tables} == {"persons_by_state_age_sex", "persons_by_county"}


@pytest.mark.parametrize(
    ("budget", "key", "message"),
    [
        ({"epsilon": 1.0, "rho": 0.5}, "budget", "epsilon .* or as rho, not both"),
        ({"delta": 1e-6}, "budget", "epsilon .* or as rho"),
        ({"rho": 0}, "budget.rho", "must be > 0"),
        ({"rho": "a lot"}, "budget.rho", ""),
    ],
)
def test_budget_in_rho_errors_name_the_key(budget: Any, key: str, message: str) -> None:
    with pytest.raises(SpecError, match=rf"{re.escape(key)}.*{message}"):
        parse_spec(base_spec(budget=budget))


def test_rho_budgets_parse_and_refuse_private_selection() -> None:
    spec = parse_spec(base_spec(budget={"rho": 0.25}, noise="gaussian"))
    assert spec.budget.is_zcdp and spec.budget.rho == 0.25 and spec.budget.epsilon is None
    doc = base_spec(budget={"rho": 0.25, "delta": 1e-6})
    doc["tables"][0]["partitions"] = {"type": "private"}
    with pytest.raises(SpecError, match=r"tables\[0\]\.partitions.*not rho-zCDP"):
        parse_spec(doc)
