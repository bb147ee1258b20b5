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
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
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


SEXES, AGES, RACES = ("F", "M"), tuple(f"a{i}" for i in range(7)), tuple(f"r{i}" for i in range(6))
SUITE_SIZES = (len(SEXES), len(AGES), len(RACES))
MARGINS = (("sex", "age_group"), ("race",), ())
SUITE_RHO = 0.5  # the census_suite conf's budget
CELL_BINS = ((0, 1), (1, 5), (5, 20), (20, 100), (100, 10**9))


def suite_truth(
    rng: np.random.Generator, states: int, counties: int
) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(county keys, true detailed tables: counties x 84 cells): log-normal county sizes,
    skewed attribute shares that vary by county, so many cells are small or empty."""
    keys = [(f"{s:02d}", f"{s:02d}{c:03d}") for s in range(states) for c in range(counties)]
    base = rng.dirichlet(np.full(int(np.prod(SUITE_SIZES)), 0.3))
    sizes = np.round(rng.lognormal(6.0, 1.2, len(keys))).astype(int)
    tables = np.array([rng.multinomial(n, rng.dirichlet(base * 60 + 0.01)) for n in sizes])
    return keys, tables.astype(float)


def suite_spec(keys: list[tuple[str, str]], **change: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "persons",
        "dimensions": ["state", "county", "sex", "age_group", "race"],
        "geography": [[], ["state"], ["state", "county"]],
        "margins": [list(m) for m in MARGINS],
        "partitions": {"type": "public", "keys": [list(k) for k in keys]},
        "bounds": {"max_partitions": 1, "max_rows_per_partition": 1},
        "metrics": ["privacy_unit_count"],
    }
    table.update(change)
    for k in [k for k, v in table.items() if v is None]:
        del table[k]
    return {
        "input": {"path": "unused", "privacy_unit": "pid"},
        "budget": {"rho": SUITE_RHO},
        "noise": "gaussian",
        "output": {"path": "unused"},
        "domains": {"sex": list(SEXES), "age_group": list(AGES), "race": list(RACES)},
        "tables": [table],
    }


def _draw(sigma2: Fraction, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    ids = np.column_stack([np.arange(n), np.zeros(n)]).astype(np.uint64)
    return discrete_gaussian(KeyedStreams(new_key(), ids), sigma2).astype(float).reshape(shape)


SUITE_QUERIES = ((0, 1, 2), (0, 1), (2,), ())
QUERY_NAMES = ("detailed", "sex x age", "race", "total")
GEO_NAMES = ("nation", "state", "county")


def _flat_table(keys: list[tuple[str, str]], **change: Any) -> Any:
    """The plan of the county x sex x age x race table without a suite's margins."""
    rows = [[s, c, x, a, r] for s, c in keys for x in SEXES for a in AGES for r in RACES]
    doc = suite_spec(
        keys, geography=None, margins=None, partitions={"type": "public", "keys": rows}, **change
    )
    (plan,) = plan_release(parse_spec(doc)).tables
    return plan


@dataclass
class _Scores:
    """Per release kind, level and query: errors of every trial; the suite's signed county cell
    errors and its interval hits."""

    errors: dict[tuple[str, int, int], list[np.ndarray]] = field(default_factory=dict)
    signed: list[np.ndarray] = field(default_factory=list)
    covered: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def suite_accuracy(trials: int, seed: int) -> list[dict[str, Any]]:
    """RMSE per geographic level and query for three releases at the same rho: the county
    detailed cells alone (every margin a sum of its clamped cells), a chain of levels (the
    nation, states and counties as totals of the detailed table) and the suite; the suite's
    bias by true cell size and its 95% interval coverage; seconds per release (numpy)."""
    from dp_ops import consistency as cons
    from dp_ops import marginals as mg
    from pipelines import suite as suite_module
    from pipelines.plan import suite_column

    rng = np.random.default_rng(seed)
    keys, leaves = suite_truth(rng, states=10, counties=12)
    states = sorted({s for s, _ in keys})
    n_units, d = len(keys), leaves.shape[1]
    parent = np.array([-1] + [0] * len(states) + [1 + states.index(s) for s, _ in keys])
    depth = np.array([0] + [1] * len(states) + [2] * n_units)
    leaf_nodes = np.flatnonzero(depth == 2)
    truth = suite_module._up_sums(parent, leaf_nodes, leaves)
    unit = "privacy_unit_count"
    (plan,) = plan_release(parse_spec(suite_spec(keys))).tables

    def column(g: int, q: int) -> str:
        return unit if (g, q) == (2, 0) else suite_column(unit, g, q)

    measures = [
        mg.LevelMeasures(
            SUITE_QUERIES, tuple(plan.noise_for(column(g, q)).sd()[0] ** 2 for q in range(4))
        )
        for g in range(3)
    ]
    structure = mg.solve_structure(parent, SUITE_SIZES, measures)
    alone = _flat_table(keys).noise_for(unit).parameter
    chain = _flat_table(keys, levels=[[], ["state"], ["state", "county"]])
    chain_sigma2 = [chain.noise_for(level_column(unit, i)).parameter for i in range(3)]
    chain_sigma2.append(chain.noise_for(unit).parameter)
    chain_parent = np.concatenate([parent, np.repeat(leaf_nodes, d)])  # counties' cells last
    chain_depth = np.concatenate([depth, np.full(n_units * d, 3)])
    chain_var = np.array([float(chain_sigma2[k]) for k in chain_depth])
    chain_truth = np.concatenate([truth.sum(axis=1), leaves.reshape(-1)])
    z = NormalDist().inv_cdf(0.975)
    scores = _Scores(seconds={"detailed alone": 0.0, "chain": 0.0, "suite": 0.0})

    def record(release: str, nodes: np.ndarray) -> None:
        for g in range(3):
            at = depth == g
            for q, query in enumerate(SUITE_QUERIES):
                error = mg.marginal(SUITE_SIZES, query, nodes[at] - truth[at]).reshape(-1)
                scores.errors.setdefault((release, g, q), []).append(error)

    for _ in range(trials):
        start = time.perf_counter()
        cells = np.maximum(leaves + _draw(alone, leaves.shape), 0)
        record("detailed alone", suite_module._up_sums(parent, leaf_nodes, cells))
        scores.seconds["detailed alone"] += time.perf_counter() - start
        start = time.perf_counter()
        noise = np.zeros(len(chain_truth))
        for k in range(4):
            at = chain_depth == k
            noise[at] = _draw(chain_sigma2[k], (int(at.sum()),))
        est = cons.gls(chain_parent, chain_truth + noise, chain_var)
        ints = cons.consistent_counts(chain_parent, est.value)[len(parent) :].reshape(n_units, d)
        record("chain", suite_module._up_sums(parent, leaf_nodes, ints.astype(float)))
        scores.seconds["chain"] += time.perf_counter() - start
        start = time.perf_counter()
        eta = np.zeros((len(parent), d))
        for g in range(3):
            at = depth == g
            ys = []
            for q, query in enumerate(SUITE_QUERIES):
                exact = mg.marginal(SUITE_SIZES, query, truth[at])
                ys.append(exact + _draw(plan.noise_for(column(g, q)).parameter, exact.shape))
            eta[at] = measures[g].eta(SUITE_SIZES, ys)
        _, _, final = mg.estimate_by_level(parent, structure, eta)
        finest = suite_module._driver_integers(parent, depth, final).astype(float)
        released = suite_module._up_sums(parent, leaf_nodes, finest)
        scores.seconds["suite"] += time.perf_counter() - start
        record("suite", released)
        scores.signed.append((finest - leaves).reshape(-1))
        for g in range(3):
            at = np.flatnonzero(depth == g)
            for q, query in enumerate(SUITE_QUERIES):
                sd = np.sqrt(mg.cell_variances(structure, SUITE_SIZES, query)[structure.down[at]])
                error = mg.marginal(SUITE_SIZES, query, released[at] - truth[at])
                scores.covered.setdefault((g, q), []).append((np.abs(error) <= z * sd).reshape(-1))
    return _suite_rows(scores, truth, depth, leaves, trials)


def _suite_rows(
    scores: _Scores, truth: np.ndarray, depth: np.ndarray, leaves: np.ndarray, trials: int
) -> list[dict[str, Any]]:
    from dp_ops import marginals as mg

    rows: list[dict[str, Any]] = []
    for g, level in enumerate(GEO_NAMES):
        for q, name in enumerate(QUERY_NAMES):
            row: dict[str, Any] = {"part": "suite rmse", "level": level, "query": name}
            for release in scores.seconds:
                rmse_value = np.sqrt(np.mean(np.square(scores.errors[(release, g, q)])))
                row[release] = round(float(rmse_value), 2)
            row["suite / alone"] = round(row["suite"] / row["detailed alone"], 3)
            row["suite / chain"] = round(row["suite"] / row["chain"], 3)
            rows.append(row)
    signed = np.stack(scores.signed)
    sizes = leaves.reshape(-1)
    for lo, hi in CELL_BINS:
        cells = (sizes >= lo) & (sizes < hi)
        if cells.any():
            rows.append(
                {
                    "part": "suite bias",
                    "cells": f"{lo}-{hi - 1 if hi < 10**9 else 'inf'}",
                    "count": int(cells.sum()),
                    "mean_error": round(float(signed[:, cells].mean()), 3),
                }
            )
    for (g, q), marks in scores.covered.items():
        want = mg.marginal(SUITE_SIZES, SUITE_QUERIES[q], truth[depth == g]).reshape(-1)
        big = want >= 20
        hits = np.stack(marks)[:, big]
        rows.append(
            {
                "part": "suite coverage",
                "level": GEO_NAMES[g],
                "query": QUERY_NAMES[q],
                "cells_20_plus": int(big.sum()),
                "coverage": round(float(hits.mean()), 4) if big.any() else None,
            }
        )
    per = {k: round(v / trials, 4) for k, v in scores.seconds.items()}
    rows.append({"part": "seconds per release", **per})
    return rows


def print_suite(rows: list[dict[str, Any]], trials: int) -> None:
    print()
    print(f"table suite, rho {SUITE_RHO}, {trials} releases: released RMSE per level and query")
    print_table(
        [r for r in rows if r["part"] == "suite rmse"],
        [
            ("level", "level", ">7"),
            ("query", "query", ">10"),
            ("detailed alone", "detailed alone", ">15"),
            ("chain", "chain", ">8"),
            ("suite", "suite", ">8"),
            ("suite/alone", "suite / alone", ">12"),
            ("suite/chain", "suite / chain", ">12"),
        ],
    )
    print()
    print("suite: mean released - true county cell, by true size")
    print_table(
        [r for r in rows if r["part"] == "suite bias"],
        [("cells", "cells", ">8"), ("count", "count", ">7"), ("mean error", "mean_error", ">11")],
    )
    print()
    print("suite: 95% interval coverage, cells of 20 or more persons")
    print_table(
        [r for r in rows if r["part"] == "suite coverage"],
        [
            ("level", "level", ">7"),
            ("query", "query", ">10"),
            ("cells", "cells_20_plus", ">6"),
            ("coverage", "coverage", ">9"),
        ],
    )
    seconds = next(r for r in rows if r["part"] == "seconds per release")
    print()
    print(
        "seconds per release (numpy, no Spark):", {k: v for k, v in seconds.items() if k != "part"}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--suite-trials", type=int, default=200)
    args = ap.parse_args()
    suite_rows = suite_accuracy(args.suite_trials, args.seed)
    for r in suite_rows:
        print(json.dumps(r), flush=True)
    print_suite(suite_rows, args.suite_trials)
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
    save_results(
        "accuracy", {"args": vars(args), "rows": rows, "curve": curve, "suite": suite_rows}
    )


if __name__ == "__main__":
    main()
