"""``dprelease plan``: what a spec would release, from the spec alone (pipelines.preview)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs import cli
from pipelines.plan import plan_release
from pipelines.preview import bound_changes, preview
from pipelines.report import privacy_report
from pipelines.spec import parse_spec
from tests.conftest import base_spec

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _no_spark(*_: Any, **__: Any) -> Any:
    raise AssertionError("dprelease plan started Spark")


@pytest.mark.parametrize(
    "spec", ["demo.yaml", "demo_zcdp.yaml", "census_suite.yaml", "survey_rr.yaml"]
)
def test_plan_reads_no_data_and_states_what_the_manifest_would(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    doc = yaml.safe_load((ROOT / "conf" / spec).read_text())
    doc["input"] = {**doc["input"], "path": str(tmp_path / "no-such-input")}
    doc["output"] = {**doc["output"], "path": str(tmp_path / "out")}
    doc.pop("ledger", None)
    path = _write(tmp_path, doc)
    monkeypatch.setattr("jobs.session.get_session", _no_spark)

    assert cli.main(["plan", path, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "out").exists()
    parsed = parse_spec(doc)
    plan = plan_release(parsed)
    assert shown["privacy"] == json.loads(json.dumps(privacy_report(plan)))  # the manifest's
    assert [t["name"] for t in shown["tables"]] == [t.name for t in parsed.tables]
    for t, planned in zip(shown["tables"], plan.tables, strict=True):
        sds = [m["standard_deviation"] for m in t["measurements"]]
        assert sds == [m.sd()[0] * m.unit for m in planned.measurements]
        assert len(t["bound_changes"]) >= 1

    assert cli.main(["plan", path]) == 0  # the text form names every table
    text = capsys.readouterr().out
    assert "no data read, no budget spent" in text
    assert all(t.name in text for t in parsed.tables)


def _sd_ratio(shown: dict[str, Any], bound: str, to: float, measurement: str) -> float:
    change = next(
        c for c in shown["tables"][0]["bound_changes"] if c["bound"] == bound and c["to"] == to
    )
    before, after = change["standard_deviation"][measurement]
    return float(after / before)


def test_doubling_and_halving_bounds_scale_the_laplace_noise_as_sensitivity_does() -> None:
    doc = base_spec(noise="laplace", budget={"epsilon": 0.1})
    doc["tables"][0]["bounds"] = {"max_partitions": 2, "max_rows_per_partition": 2}
    doc["tables"][0]["metrics"] = ["count", {"sum": "v", "lower": -50, "upper": 100}]
    shown = preview(parse_spec(doc))
    rel = 0.02  # the discrete Laplace's sd is its scale's up to a few percent at these scales
    sum_name = next(m for m in shown["tables"][0]["measurements"] if m["column"] == "s_v")
    s = sum_name["measurement"]
    assert _sd_ratio(shown, "bounds.max_partitions", 4, "count") == pytest.approx(2, rel=rel)
    assert _sd_ratio(shown, "bounds.max_partitions", 1, "count") == pytest.approx(0.5, rel=rel)
    assert _sd_ratio(shown, "bounds.max_rows_per_partition", 4, s) == pytest.approx(2, rel=rel)
    # the sum is centered: its sensitivity is half the range, (upper - lower) / 2
    assert _sd_ratio(shown, "v.upper", 200, s) == pytest.approx(250 / 150, rel=rel)
    assert _sd_ratio(shown, "v.upper", 50, s) == pytest.approx(100 / 150, rel=rel)
    assert _sd_ratio(shown, "v.lower", -100, s) == pytest.approx(200 / 150, rel=rel)
    assert _sd_ratio(shown, "v.upper", 200, "count") == pytest.approx(1)
    bounds = [(c["bound"], c["to"]) for c in shown["tables"][0]["bound_changes"]]
    assert ("v.lower", -25) in bounds and len(bounds) == len(set(bounds)) == 8


def test_gaussian_noise_grows_with_the_root_of_max_partitions() -> None:
    doc = base_spec(noise="gaussian", budget={"rho": 0.05})
    doc["tables"][0]["bounds"] = {"max_partitions": 4, "max_rows_per_partition": 1}
    shown = preview(parse_spec(doc))
    ratio = _sd_ratio(shown, "bounds.max_partitions", 8, "count")
    assert ratio == pytest.approx(math.sqrt(2), rel=0.01)


def test_bounds_that_would_be_invalid_are_not_offered() -> None:
    doc = base_spec()
    doc["tables"][0]["metrics"] = ["count", {"sum": "v", "lower": 5, "upper": 10}]
    changes = {(c.bound, c.after) for c in bound_changes(parse_spec(doc))}
    assert ("bounds.max_partitions", 2) in changes and ("v.upper", 20) in changes
    assert ("v.upper", 5) not in changes and ("v.lower", 10) not in changes  # empty ranges
    assert not any(c[0] == "bounds.max_partitions" and c[1] < 1 for c in changes)
    doc["tables"][0]["metrics"] = ["count", {"sum": "v", "lower": 0, "upper": 10}]
    assert not any(c.bound == "v.lower" for c in bound_changes(parse_spec(doc)))  # 0 stays 0


def test_private_selection_states_the_units_for_even_and_95_percent_odds() -> None:
    doc = base_spec()
    doc["tables"][0]["partitions"] = {"type": "private", "strategy": "laplace"}
    spec = parse_spec(doc)
    shown = preview(spec)["tables"][0]
    sel = plan_release(spec).tables[0].selection
    assert sel is not None
    n50, n95 = shown["selection_units"]["0.5"], shown["selection_units"]["0.95"]
    assert sel.keep_probability(n50) >= 0.5 > sel.keep_probability(n50 - 1)
    assert sel.keep_probability(n95) >= 0.95 > sel.keep_probability(n95 - 1)
    l0 = next(c for c in shown["bound_changes"] if c["bound"] == "bounds.max_partitions")
    assert l0["units_for_even_odds"][0] == n50 < l0["units_for_even_odds"][1]


BAD_SPECS = {
    "negative epsilon": {"budget": {"epsilon": -1}},
    "no tables": {"tables": []},
    "noise beyond 64 bits": {
        "tables": [
            {
                **base_spec()["tables"][0],
                "metrics": [{"sum": "v", "lower": 0, "upper": 1e30, "granularity": 1e-9}],
            }
        ]
    },
}


@pytest.mark.parametrize("bad", sorted(BAD_SPECS))
def test_plan_refuses_what_run_refuses_with_the_same_exit_code(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    path = _write(tmp_path, base_spec(**BAD_SPECS[bad]))
    monkeypatch.setattr("jobs.session.get_session", _no_spark)
    planned = cli.main(["plan", path])
    plan_error = capsys.readouterr().err
    ran = cli.main(["run", path, "--output", str(tmp_path / "out")])
    assert planned == ran == 2
    assert plan_error.startswith("dprelease: error:") and plan_error == capsys.readouterr().err
