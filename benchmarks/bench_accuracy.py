"""Accuracy of a nation > state > county count suite, before and after consistency.

Generates census-shaped truth (50 states, about 3,000 counties with log-normal populations, many
small), plans the suite with dprelease's own planner at each epsilon (discrete Gaussian noise,
the budget shared by the three levels), draws the planned noise with the exact samplers, and
applies the consistency step of ``dp_ops.consistency`` (the math that ``pipelines.consistency``
runs level by level on Spark, checked equal in the tests). Three budget splits at equal budget:
no levels (the whole budget on the counties, margins summed from them), the equal split and the
default (``max_detail_loss: 0.1``). Prints, per epsilon, split and level, the RMSE of the raw
noisy measurements, of the GLS estimate, of its non-negative projection and of the released
non-negative integers, and the released RMSE over that of the release without levels; at
epsilon 1 the trade-off curve as ``max_detail_loss`` moves; and the median relative error of
released county counts by county size.

Not a test: ``python benchmarks/bench_accuracy.py [--trials 20]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import print_table, save_results  # noqa: E402
from dp_ops.consistency import consistent_counts, consistent_nonnegative, gls  # noqa: E402
from dp_ops.keyed_stream import KeyedStreams, new_key  # noqa: E402
from dp_ops.samplers import discrete_gaussian  # noqa: E402
from pipelines.plan import level_column, plan_release  # noqa: E402
from pipelines.spec import parse_spec  # noqa: E402

EPSILONS = (0.5, 1.0, 4.0)
DELTA = 1e-10
SIZE_BINS = ((0, 100), (100, 1_000), (1_000, 10_000), (10_000, 10**9))


def census_tree(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(parent array, true counts, (state, county) keys): nation, 50 states, ~3,000 counties."""
    parent, keys = [-1], []
    counties_per_state = rng.poisson(60, 50) + 1
    parent.extend([0] * 50)
    leaves = []
    for s, k in enumerate(counties_per_state):
        for c in range(k):
            parent.append(1 + s)
            leaves.append(len(parent) - 1)
            keys.append((f"{s:02d}", f"{s:02d}{c:03d}"))
    p = np.array(parent)
    truth = np.zeros(len(p))
    truth[leaves] = np.round(rng.lognormal(8.0, 1.6, len(leaves)))
    for v in reversed(leaves):  # counties into states, states into the nation
        truth[p[v]] += truth[v]
    truth[0] = truth[1:51].sum()
    return p, truth, keys


def suite_doc(epsilon: float, keys: list[tuple[str, str]], **change: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "persons_by_county",
        "dimensions": ["state", "county"],
        "levels": [[], ["state"]],
        "partitions": {"type": "public", "keys": [list(k) for k in keys]},
        "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
        "metrics": ["privacy_unit_count"],
    }
    table.update(change)
    if not table["levels"]:
        del table["levels"]
    return {
        "input": {"path": "unused", "privacy_unit": "person_id"},
        "budget": {"epsilon": epsilon, "delta": DELTA},
        "noise": "gaussian",
        "output": {"path": "unused"},
        "tables": [table],
    }


UNIT = "privacy_unit_count"


def planned_variances(epsilon: float, keys: list[tuple[str, str]], **change: Any) -> list[Fraction]:
    """sigma^2 of the nation, state and county measurements (0 for a level not measured)."""
    (table,) = plan_release(parse_spec(suite_doc(epsilon, keys, **change))).tables
    measured = {m.column: m.parameter for m in table.measurements}
    columns = (level_column(UNIT, 0), level_column(UNIT, 1), UNIT)
    return [measured.get(c, Fraction(0)) for c in columns]


def trial_errors(
    parent: np.ndarray, truth: np.ndarray, depth: np.ndarray, sigma2: list[Fraction], trials: int
) -> tuple[dict[str, np.ndarray], float]:
    """Errors (trials x nodes) of the raw measurements, the least-squares estimate, its
    non-negative projection and the released integers, and the seconds they took. An unmeasured
    level is the sum of the cells below it: least squares with an infinite variance there, and
    the released cells clamped at zero, summed (what a user adding up the cells gets)."""
    variance = np.array([float(sigma2[d]) if sigma2[d] else np.inf for d in depth])
    err: dict[str, list[np.ndarray]] = {"raw": [], "gls": [], "nonneg": [], "released": []}
    start = time.perf_counter()
    for _ in range(trials):
        noise = np.zeros(len(parent))
        for d in range(3):
            at = np.flatnonzero(depth == d)
            if sigma2[d]:
                ids = np.column_stack([at, np.full(len(at), d)]).astype(np.uint64)
                noise[at] = discrete_gaussian(KeyedStreams(new_key(), ids), sigma2[d])
        raw = truth + noise
        est = gls(parent, raw, variance)
        if sigma2[0] and sigma2[1]:
            released = consistent_counts(parent, est.value)
            nonneg = consistent_nonnegative(parent, est.value)
        else:  # no levels: the cells clamped at zero, each level their sum
            released = np.where(depth == 2, np.maximum(np.rint(raw), 0), 0.0)
            for d in (2, 1):
                at = np.flatnonzero(depth == d)
                np.add.at(released, parent[at], released[at])
            nonneg = released
        err["raw"].append(np.where(np.isfinite(variance), raw - truth, est.value - truth))
        err["gls"].append(est.value - truth)
        err["nonneg"].append(nonneg - truth)
        err["released"].append(released - truth)
    return {k: np.stack(v) for k, v in err.items()}, time.perf_counter() - start


def rmse(errors: np.ndarray, at: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean(errors[:, at] ** 2))), 2)


SPLITS: dict[str, dict[str, Any]] = {
    "no levels": {"levels": []},
    "equal": {"level_weights": [1, 1, 1]},
    "default": {},
}
CURVE_LOSSES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    parent, truth, keys = census_tree(rng)
    depth = np.where(parent == -1, 0, np.where(parent == 0, 1, 2))
    names = ["nation", "state", "county"]
    rows: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    for eps in EPSILONS:
        baseline: dict[str, float] = {}
        for split, change in SPLITS.items():
            sigma2 = planned_variances(eps, keys, **change)
            stacked, elapsed = trial_errors(parent, truth, depth, sigma2, args.trials)
            for d, level in enumerate(names):
                at = depth == d
                row: dict[str, Any] = {
                    "epsilon": eps,
                    "split": split,
                    "level": level,
                    "cells": int(at.sum()),
                }
                for k, e in stacked.items():
                    row[f"rmse_{k}"] = rmse(e, at)
                if split == "no levels":
                    baseline[level] = row["rmse_gls"]  # the sum of the unconstrained cells
                row["vs_no_levels"] = round(row["rmse_released"] / baseline[level], 3)
                rows.append(row)
            if split != "default":
                continue
            leaves = depth == 2
            for lo, hi in SIZE_BINS:
                cells = leaves & (truth >= lo) & (truth < hi)
                if not cells.any():
                    continue
                rel = {
                    k: float(np.median(np.abs(e[:, cells]) / np.maximum(truth[cells], 1)))
                    for k, e in stacked.items()
                }
                rows.append(
                    {
                        "epsilon": eps,
                        "split": split,
                        "level": f"county {lo}-{hi if hi < 10**9 else 'inf'}",
                        "cells": int(cells.sum()),
                        "median_rel_raw": round(rel["raw"], 4),
                        "median_rel_released": round(rel["released"], 4),
                    }
                )
            total_raw = float(np.sum(stacked["raw"] ** 2))
            rows.append(
                {
                    "epsilon": eps,
                    "split": split,
                    "level": "all cells: total squared error / raw",
                    "gls": round(float(np.sum(stacked["gls"] ** 2)) / total_raw, 4),
                    "nonneg": round(float(np.sum(stacked["nonneg"] ** 2)) / total_raw, 4),
                    "ratio": round(float(np.sum(stacked["released"] ** 2)) / total_raw, 4),
                    "seconds": round(elapsed, 2),
                }
            )
        if eps != 1.0:
            continue
        for loss in CURVE_LOSSES:  # the trade-off as the split moves
            sigma2 = planned_variances(eps, keys, max_detail_loss=loss)
            stacked, _ = trial_errors(parent, truth, depth, sigma2, args.trials)
            point: dict[str, Any] = {"epsilon": eps, "max_detail_loss": loss}
            for d, level in enumerate(names):
                point[level] = round(rmse(stacked["released"], depth == d) / baseline[level], 3)
            curve.append(point)
    for r in rows + curve:
        print(json.dumps(r), flush=True)
    print()
    print_table(
        [r for r in rows if "rmse_raw" in r],
        [
            ("eps", "epsilon", ">4"),
            ("split", "split", ">9"),
            ("level", "level", ">7"),
            ("cells", "cells", ">6"),
            ("RMSE raw", "rmse_raw", ">9"),
            ("RMSE GLS", "rmse_gls", ">9"),
            ("non-neg", "rmse_nonneg", ">9"),
            ("released", "rmse_released", ">9"),
            ("/no levels", "vs_no_levels", ">10"),
        ],
    )
    print()
    print("trade-off at eps 1: released RMSE / that of the release without levels (margins: the")
    print("sum of its cells), as max_detail_loss moves the budget from the counties to the margins")
    print_table(
        curve,
        [
            ("max_detail_loss", "max_detail_loss", ">15"),
            ("county", "county", ">7"),
            ("state", "state", ">6"),
            ("nation", "nation", ">6"),
        ],
    )
    print()
    for r in rows:
        if "median_rel_raw" in r:
            print(
                f"eps {r['epsilon']}: {r['level']:>20} ({r['cells']} cells) median relative "
                f"error raw {r['median_rel_raw']}, released {r['median_rel_released']}"
            )
        if "ratio" in r:
            print(
                f"eps {r['epsilon']}: {r['level']}: GLS {r['gls']}, non-negative {r['nonneg']}, "
                f"released integers {r['ratio']}"
            )
    save_results("accuracy", {"args": vars(args), "rows": rows, "curve": curve})


if __name__ == "__main__":
    main()
