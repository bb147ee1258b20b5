"""Non-negative integer tables per geographic unit keeping both the units' totals and their
parent's cells (dp_ops.integer_tables)."""

from __future__ import annotations

import numpy as np
import pytest

from dp_ops import integer_tables
from dp_ops.consistency import consistent_counts
from dp_ops.integer_tables import children_counts, controlled_rounding, root_counts, simplex_rows


def _sparse_table(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    """Children x cells true counts: about a third of the cells empty, sizes spread widely."""
    sizes = rng.gamma(0.6, 6.0, size=(k, d)) * rng.uniform(0.2, 3.0, size=(k, 1))
    return rng.poisson(sizes)


def test_simplex_rows_is_the_euclidean_projection_row_by_row() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(0, 3, size=(40, 9))
    totals = rng.uniform(0, 20, size=40)
    totals[3] = 0.0
    x = simplex_rows(m, totals)
    assert (x >= 0).all() and np.allclose(x.sum(axis=1), totals)
    assert (x[3] == 0).all()
    # the projection's optimality: a single threshold, cells above it shifted by it
    for row, out, t in zip(m, x, totals, strict=True):
        if t == 0:
            continue
        kept = out > 0
        theta = row[kept] - out[kept]
        assert np.allclose(theta, theta[0])
        assert (row[~kept] <= theta[0] + 1e-12).all()
    # one row alone gives the same bits as in a batch
    assert np.array_equal(simplex_rows(m[5:6], totals[5:6])[0], x[5])
    with pytest.raises(ValueError, match=">= 0"):
        simplex_rows(m, -totals)


def test_root_counts_round_the_total_half_up_and_never_go_negative() -> None:
    x = np.array([[1.2, 2.3, -0.2], [-3.0, -1.0, 0.5], [0.25, 0.25, 0.0]])
    counts = root_counts(x)
    assert counts.dtype == np.int64 and (counts >= 0).all()
    assert list(counts.sum(axis=1)) == [3, 0, 1]  # 3.3 -> 3, negative -> 0, 0.5 -> 1
    assert (np.abs(counts[0] - np.array([1.2, 2.3, -0.2])) < 1.01).all()


def test_children_keep_both_margins_and_stay_within_one_of_the_fit() -> None:
    rng = np.random.default_rng(1)
    for k, d in [(1, 5), (3, 1), (7, 24), (30, 64)]:
        truth = _sparse_table(rng, k, d)
        x = truth + rng.laplace(0, 2.0, size=(k, d))
        parent = np.maximum(np.rint(x.sum(axis=0) + rng.normal(0, 1, d)), 0).astype(np.int64)
        counts = children_counts(x, parent)
        assert counts.dtype == np.int64 and (counts >= 0).all()
        assert np.array_equal(counts.sum(axis=0), parent)
        totals = x.sum(axis=1)
        shares = simplex_rows(totals[None, :], np.array([float(parent.sum())]))[0]
        assert (np.abs(counts.sum(axis=1) - shares) < 1).all()  # the totals made whole
    with pytest.raises(ValueError, match="needs children"):
        children_counts(np.zeros((0, 3)), np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="non-negative"):
        children_counts(np.zeros((2, 3)), np.array([1, -1, 0]))


def test_controlled_rounding_keeps_rows_and_columns_and_whole_cells() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        k, d = int(rng.integers(1, 12)), int(rng.integers(1, 40))
        y = rng.integers(0, 5, size=(k, d)) + (rng.random((k, d)) < 0.4) * rng.random((k, d))
        # integral margins by construction: a spare column makes each row whole, then a spare
        # row makes each column whole (and so its own sum)
        y = np.c_[y, np.ceil(y.sum(axis=1)) - y.sum(axis=1)]
        y = np.r_[y, [np.ceil(y.sum(axis=0)) - y.sum(axis=0)]]
        rows = np.rint(y.sum(axis=1)).astype(np.int64)
        cols = np.rint(y.sum(axis=0)).astype(np.int64)
        counts = controlled_rounding(y, rows, cols)
        assert np.array_equal(counts.sum(axis=1), rows)
        assert np.array_equal(counts.sum(axis=0), cols)
        assert (np.abs(counts - y) < 1).all()
        whole_cells = np.abs(y - np.rint(y)) < 1e-12
        assert np.array_equal(counts[whole_cells], np.rint(y[whole_cells]))


def test_rounding_that_cannot_swap_keeps_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback (rows exact, each row by largest remainders) when no flow finds the swaps."""
    monkeypatch.setattr(integer_tables, "_swap_within_columns", lambda *a: None)
    y = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    counts = controlled_rounding(y, np.array([1, 1, 1]), np.array([1, 1, 1]))
    assert list(counts.sum(axis=1)) == [1, 1, 1] and (counts >= 0).all()


@pytest.mark.slow
def test_unit_totals_are_unbiased_where_cell_by_cell_projection_is_not() -> None:
    """Many noisy releases of one parent's children (a small unit among large ones, sparse
    cells): the totals of ``children_counts`` are unbiased within their standard error; the
    control, projecting each cell's column of children alone (a chain of levels per cell),
    biases the small unit's total up by many standard errors."""
    rng = np.random.default_rng(3)
    k, d, reps = 6, 200, 300
    truth = _sparse_table(rng, k, d)
    truth[0] = rng.poisson(0.3, d)  # the small unit
    parent_truth = truth.sum(axis=0)
    ours, control = [], []
    for _ in range(reps):
        x = truth + rng.laplace(0, 2.0, size=(k, d))
        x -= (x.sum(axis=0) - parent_truth) / k  # consistent with an exact parent, as LS is
        ours.append(children_counts(x, parent_truth)[0].sum() - truth[0].sum())
        chain_parent = np.r_[np.full(d, -1), np.repeat(np.arange(d), k)]
        chained = consistent_counts(chain_parent, np.r_[parent_truth, x.T.reshape(-1)])
        control.append(chained[d:].reshape(d, k)[:, 0].sum() - truth[0].sum())
    for errors, biased in [(np.array(ours), False), (np.array(control), True)]:
        z = errors.mean() / (errors.std(ddof=1) / np.sqrt(reps))
        assert (abs(z) > 6) == biased, (errors.mean(), z)
