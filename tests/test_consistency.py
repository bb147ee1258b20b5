"""Consistency over hierarchies: exact GLS against dense least squares, projection, rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dp_ops.consistency import (
    consistent_counts,
    consistent_nonnegative,
    depths,
    gls,
    largest_remainder,
    simplex_projection,
)


def random_tree(rng: np.random.Generator, fanouts: tuple[int, ...], low: int = 1) -> np.ndarray:
    """A tree with a random number (low..f) of children per node at each level."""
    parent = [-1]
    level = [0]
    for f in fanouts:
        nxt = []
        for v in level:
            for _ in range(int(rng.integers(low, f + 1))):
                parent.append(v)
                nxt.append(len(parent) - 1)
        level = nxt
    return np.array(parent)


def dense_gls(parent: np.ndarray, y: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares over the leaves, by dense linear algebra (the oracle)."""
    n = len(parent)
    children = np.bincount(parent[parent >= 0], minlength=n)
    leaves = np.flatnonzero(children == 0)
    a = np.zeros((n, len(leaves)))  # node value = sum of the leaves below it
    for j, leaf in enumerate(leaves):
        v = leaf
        while v >= 0:
            a[v, j] = 1.0
            v = parent[v]
    measured = np.isfinite(var)
    am, w = a[measured], 1.0 / var[measured]
    cov_leaves = np.linalg.inv(am.T @ (w[:, None] * am))
    beta = cov_leaves @ (am.T @ (w * y[measured]))
    return a @ beta, np.einsum("ij,jk,ik->i", a, cov_leaves, a)


@pytest.mark.parametrize("seed", range(6))
def test_two_pass_gls_equals_dense_least_squares_with_exact_variances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parent = random_tree(rng, (4, 3, 3))
    n = len(parent)
    var = rng.uniform(0.5, 20.0, n)
    if seed % 2:  # an unmeasured internal node (e.g. a level without budget)
        var[0] = np.inf
    truth = rng.integers(0, 50, n).astype(float)
    y = truth + rng.normal(0, np.sqrt(np.where(np.isfinite(var), var, 1.0)))
    est = gls(parent, y, var)
    want, want_var = dense_gls(parent, y, var)
    np.testing.assert_allclose(est.value, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(est.variance, want_var, rtol=1e-9)
    sums = np.bincount(parent[1:], weights=est.value[1:], minlength=n)
    internal = np.bincount(parent[1:], minlength=n) > 0
    np.testing.assert_allclose(est.value[internal], sums[internal], atol=1e-9)  # consistent
    assert np.all(est.variance <= var + 1e-12)  # combining never makes a node worse
    # control: the raw measurements do not add up
    assert not np.allclose(
        y[internal], np.bincount(parent[1:], weights=y[1:], minlength=n)[internal]
    )


def test_equal_variances_reduce_to_hay_et_al() -> None:
    # a parent and two children, all with variance 1: x_p = (2 y_p + y_1 + y_2) / 3 (Hay 2010)
    est = gls([-1, 0, 0], [10.0, 4.0, 3.0], [1.0, 1.0, 1.0])
    assert est.value[0] == pytest.approx((2 * 10 + 4 + 3) / 3)
    assert est.variance[0] == pytest.approx(2 / 3)


def test_bad_hierarchies_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        depths([1, 0])
    with pytest.raises(ValueError, match="every leaf needs a measurement"):
        gls([-1, 0], [1.0, 1.0], [1.0, np.inf])
    with pytest.raises(ValueError, match="> 0"):
        gls([-1, 0], [1.0, 1.0], [0.0, 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_simplex_projection_meets_its_optimality_conditions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = 40
    group = rng.integers(0, groups, 300)
    v = rng.normal(2, 5, 300)
    total = rng.integers(0, 30, groups).astype(float)
    x = simplex_projection(group, v, total)
    assert np.all(x >= 0)
    np.testing.assert_allclose(np.bincount(group, weights=x, minlength=groups), total, atol=1e-9)
    for g in range(groups):  # x = max(v - theta, 0) for one theta per group (Duchi et al. 2008)
        vg, xg = v[group == g], x[group == g]
        if total[g] == 0 or len(vg) == 0:
            assert np.all(xg == 0)
            continue
        theta = (vg - xg)[xg > 0]
        assert np.ptp(theta) < 1e-9 and np.all(vg[xg == 0] <= theta[0] + 1e-9)
    # control: rescaling the positive part also meets the totals but is not the projection
    g0 = np.flatnonzero(group == 0)
    pos = np.maximum(v[g0], 0)
    scaled = pos * total[0] / pos.sum()
    assert np.ptp((v[g0] - scaled)[scaled > 0]) > 1e-6


def test_largest_remainder_keeps_every_total() -> None:
    rng = np.random.default_rng(7)
    group = np.repeat(np.arange(50), 7)
    raw = rng.dirichlet(np.ones(7), 50) * rng.integers(0, 40, 50)[:, None]
    x = raw.ravel()
    total = np.rint(raw.sum(axis=1)).astype(np.int64)
    out = largest_remainder(group, x, total)
    assert np.array_equal(np.bincount(group, weights=out, minlength=50).astype(int), total)
    assert np.all(np.abs(out - x) < 1)
    # control: rounding each value on its own breaks the totals
    naive = np.bincount(group, weights=np.rint(x), minlength=50).astype(int)
    assert not np.array_equal(naive, total)


def test_consistent_counts_add_up_at_every_level_and_are_non_negative_integers() -> None:
    rng = np.random.default_rng(11)
    parent = random_tree(rng, (5, 4, 6), low=3)
    n = len(parent)
    truth = np.zeros(n)
    leaves = np.bincount(parent[1:], minlength=n) == 0
    truth[leaves] = rng.poisson(3, leaves.sum())  # many small cells: noise makes some negative
    for d in range(int(depths(parent).max()), 0, -1):
        kids = np.flatnonzero(depths(parent) == d)
        np.add.at(truth, parent[kids], truth[kids])  # internal truths: sums of their children
    y = truth + rng.normal(0, 3, n)
    est = gls(parent, y, np.full(n, 9.0))
    assert np.any(est.value < 0)  # the estimate alone has negative cells
    counts = consistent_counts(parent, est.value)
    assert counts.dtype == np.int64 and np.all(counts >= 0)
    internal = np.bincount(parent[1:], minlength=n) > 0
    sums = np.bincount(parent[1:], weights=counts[1:], minlength=n).astype(np.int64)
    assert np.array_equal(counts[internal], sums[internal])


def test_the_real_valued_projection_adds_up_and_keeps_a_positive_estimate() -> None:
    rng = np.random.default_rng(12)
    parent = random_tree(rng, (4, 5), low=2)
    n = len(parent)
    internal = np.bincount(parent[1:], minlength=n) > 0
    y = rng.normal(2, 3, n)
    est = gls(parent, y, np.full(n, 9.0)).value
    assert np.any(est < 0)
    x = consistent_nonnegative(parent, est)
    assert np.all(x >= 0)
    sums = np.bincount(parent[1:], weights=x[1:], minlength=n)
    assert np.allclose(x[internal], sums[internal])
    assert np.all(np.abs(x - consistent_counts(parent, est)) < 1)  # rounding moves less than 1
    positive = gls(parent, y + 100, np.full(n, 9.0)).value
    assert np.allclose(consistent_nonnegative(parent, positive), positive)  # nothing to clamp


def test_spark_levels_match_the_numpy_reference(spark: Any) -> None:
    from pipelines.consistency import (
        COUNT,
        ESTIMATE,
        ESTIMATE_VAR,
        NOISE_VAR,
        NOISY,
        gls_levels,
        integer_levels,
    )

    rng = np.random.default_rng(3)
    parent = random_tree(rng, (6, 5), low=2)  # total > states > counties
    n = len(parent)
    depth = depths(parent)
    var = np.array([4.0, 9.0, 16.0])[depth]  # one noise variance per level
    y = rng.normal(5, 4, n)  # small counts: some estimates go negative
    ref = gls(parent, y, var)
    ref_counts = consistent_counts(parent, ref.value)
    state_of = {v: f"s{v:02d}" for v in np.flatnonzero(depth == 1)}
    rows: list[list[tuple[Any, ...]]] = [[], [], []]
    for v in range(n):
        if depth[v] == 0:
            rows[0].append((float(y[v]), float(var[v])))
        elif depth[v] == 1:
            rows[1].append((state_of[v], float(y[v]), float(var[v])))
        else:
            rows[2].append((state_of[parent[v]], f"c{v:03d}", float(y[v]), float(var[v])))
    schemas = [
        f"{NOISY} double, {NOISE_VAR} double",
        f"state string, {NOISY} double, {NOISE_VAR} double",
        f"state string, county string, {NOISY} double, {NOISE_VAR} double",
    ]
    levels = [spark.createDataFrame(r, s) for r, s in zip(rows, schemas, strict=True)]
    level_keys = [[], ["state"], ["state", "county"]]
    estimated = gls_levels(levels, level_keys)
    counted = integer_levels(estimated, level_keys)
    got = {}
    for i, df in enumerate(counted):
        for r in df.collect():
            key = r["county"] if i == 2 else r["state"] if i == 1 else "total"
            got[key] = (r[ESTIMATE], r[ESTIMATE_VAR], r[COUNT])
    for v in range(n):
        key = f"c{v:03d}" if depth[v] == 2 else state_of.get(v, "total")
        est, est_var, count = got[key]
        assert est == pytest.approx(ref.value[v], abs=1e-9)
        assert est_var == pytest.approx(ref.variance[v], rel=1e-9)
        assert count == ref_counts[v], key
    assert min(c for _, _, c in got.values()) >= 0 and any(ref.value < 0)


def _tied_levels(spark: Any, order: int) -> list[Any]:
    """200 states of 8 counties, integer noisy counts, one variance per level: every sibling's
    estimate has the same fractional part, so the rounding's ties are everywhere. ``order``
    permutes the counties' rows and their partitioning (0: as generated)."""
    from pipelines.consistency import NOISE_VAR, NOISY

    rng = np.random.default_rng(11)
    states = [f"s{s:03d}" for s in range(200)]
    counties = [(s, f"{s}c{c}", float(rng.integers(0, 40))) for s in states for c in range(8)]
    total = [(float(sum(c[2] for c in counties) + 7), 1600.0)]
    by_state = [(s, float(rng.integers(0, 300)), 70.0) for s in states]
    rows = [(s, c, y, 3.0) for s, c, y in counties]
    if order:
        rows = [rows[i] for i in np.random.default_rng(order).permutation(len(rows))]
    schema = f"state string, county string, {NOISY} double, {NOISE_VAR} double"
    finest = spark.createDataFrame(rows, schema)
    if order:
        finest = finest.repartition(1 + 3 * order)
    return [
        spark.createDataFrame(total, f"{NOISY} double, {NOISE_VAR} double"),
        spark.createDataFrame(by_state, f"state string, {NOISY} double, {NOISE_VAR} double"),
        finest,
    ]


def _tied_counts(spark: Any, order: int) -> list[tuple[str, float, int]]:
    from pipelines.consistency import COUNT, ESTIMATE, gls_levels, integer_levels

    keys = [[], ["state"], ["state", "county"]]
    counted = integer_levels(gls_levels(_tied_levels(spark, order), keys), keys)
    return sorted((r["county"], r[ESTIMATE], r[COUNT]) for r in counted[2].collect())


def test_consistent_counts_do_not_depend_on_the_order_spark_adds_in(
    spark: Any, monkeypatch: Any
) -> None:
    """A partition computed again (a lost executor) or another partitioning must give the same
    released integers: the sums over children are exact, so the rounding's ties fall the same
    way. Control: plain float sums, whose last bits follow the order, move some counts."""
    from pipelines import consistency

    first = _tied_counts(spark, 0)
    assert all(_tied_counts(spark, order) == first for order in (1, 2, 3))
    monkeypatch.setattr(
        consistency, "_exact_sum", lambda column: consistency.F.sum(consistency.F.col(column))
    )
    floats = [[count for *_, count in _tied_counts(spark, order)] for order in (0, 1, 2, 3)]
    assert any(counts != floats[0] for counts in floats[1:])  # released integers, not just bits
