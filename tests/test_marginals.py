"""The least-squares math of table suites (dp_ops.marginals) against a dense solution."""

from __future__ import annotations

import numpy as np
import pytest

from dp_ops import marginals as mg

SIZES = (2, 3)
DETAILED = (0, 1)


def _forest(with_root: bool) -> np.ndarray:
    """A nation (optional) > 3 states > 6 counties, states of 3, 1 and 2 counties."""
    states = [-1, -1, -1] if not with_root else [0, 0, 0]
    top = [] if not with_root else [-1]
    base = len(top)
    counties = [base + 0] * 3 + [base + 1] + [base + 2] * 2
    return np.array(top + states + counties)


def _measures(with_root: bool) -> list[mg.LevelMeasures]:
    levels = [
        mg.LevelMeasures((DETAILED, (0,), ()), (9.0, 2.0, 1.5)),
        mg.LevelMeasures((DETAILED, (1,)), (4.0, 3.0)),
        mg.LevelMeasures((DETAILED, ()), (1.0, 5.0)),
    ]
    return levels if with_root else levels[1:]


def _dense(parent: np.ndarray, measures: list[mg.LevelMeasures], ys: list[list[np.ndarray]]):
    """GLS over the stacked system: unknowns are the leaves' histograms."""
    depth = np.zeros(len(parent), dtype=int)
    for v in range(len(parent)):
        depth[v] = 0 if parent[v] < 0 else depth[parent[v]] + 1
    leaves = [v for v in range(len(parent)) if v not in set(parent.tolist())]
    d = int(np.prod(SIZES))
    below = np.zeros((len(parent), len(leaves)))
    for j, leaf in enumerate(leaves):
        v = leaf
        while v >= 0:
            below[v, j] = 1
            v = parent[v]
    rows, values, weights = [], [], []
    for v in range(len(parent)):
        level = measures[depth[v]]
        for q, var, y in zip(level.queries, level.variances, ys[v], strict=True):
            a = mg.marginal(SIZES, q, np.eye(d)).T  # q x d
            rows.append(np.kron(below[v][None, :], a))
            values.append(y)
            weights.append(np.full(len(y), 1 / var))
    m = np.vstack(rows)
    w = np.concatenate(weights)
    precision = m.T @ (w[:, None] * m)
    cov = np.linalg.inv(precision)
    x = cov @ (m.T @ (w * np.concatenate(values)))
    node = np.kron(below, np.eye(d))
    est = (node @ x).reshape(len(parent), d)
    covs = [
        node[v * d : (v + 1) * d] @ cov @ node[v * d : (v + 1) * d].T for v in range(len(parent))
    ]
    return est, covs


@pytest.mark.parametrize("with_root", [True, False])
def test_two_passes_equal_the_dense_least_squares_solution(with_root: bool) -> None:
    parent = _forest(with_root)
    measures = _measures(with_root)
    depth = np.zeros(len(parent), dtype=int)
    for v in range(len(parent)):
        depth[v] = 0 if parent[v] < 0 else depth[parent[v]] + 1
    rng = np.random.default_rng(4)
    ys = [
        [rng.normal(10, 5, mg.query_cells(SIZES, q)) for q in measures[depth[v]].queries]
        for v in range(len(parent))
    ]
    structure = mg.solve_structure(parent, SIZES, measures)
    eta = np.vstack(
        [measures[depth[v]].eta(SIZES, [y[None, :] for y in ys[v]]) for v in range(len(parent))]
    )
    _, _, final = mg.estimate(parent, structure, eta)
    dense, covs = _dense(parent, measures, ys)
    np.testing.assert_allclose(final, dense, rtol=1e-9, atol=1e-9)
    for v in range(len(parent)):
        np.testing.assert_allclose(structure.F[structure.down[v]], covs[v], rtol=1e-9, atol=1e-12)
    for v in range(len(parent)):  # consistent: parents are the sums of their children
        kids = np.flatnonzero(parent == v)
        if len(kids):
            np.testing.assert_allclose(final[kids].sum(axis=0), final[v], atol=1e-9)
    # same-shaped subtrees share matrices: the 6 counties have 1 bottom-up signature
    assert len(set(structure.up[depth == depth.max()].tolist())) == 1
    by_level = mg.estimate_by_level(parent, structure, eta)  # the same bits, vectorized
    for a, b in zip(by_level, mg.estimate(parent, structure, eta), strict=True):
        assert np.array_equal(a, b)
    # control: dropping the top-down pass leaves the estimate inconsistent and off the solution
    m, _, _ = mg.estimate(parent, structure, eta)
    assert not np.allclose(m, dense, atol=1e-6)


def test_cell_variances_are_the_diagonal_of_the_marginal_covariance() -> None:
    parent = _forest(True)
    structure = mg.solve_structure(parent, SIZES, _measures(True))
    for q in (DETAILED, (0,), (1,), ()):
        a = mg.marginal(SIZES, q, np.eye(6)).T
        got = mg.cell_variances(structure, SIZES, q)
        want = np.array([np.diag(a @ f @ a.T) for f in structure.F])
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_marginals_and_their_adjoint() -> None:
    rng = np.random.default_rng(1)
    h = rng.normal(size=(4, 6))
    y = rng.normal(size=(4, 2))
    # <A h, y> == <h, A^T y>
    assert np.allclose(
        (mg.marginal(SIZES, (0,), h) * y).sum(), (h * mg.spread(SIZES, (0,), y)).sum()
    )
    np.testing.assert_allclose(mg.marginal(SIZES, (), h)[:, 0], h.sum(axis=1))
    np.testing.assert_allclose(mg.marginal(SIZES, (1,), h), h.reshape(4, 2, 3).sum(axis=1))
    a = mg.marginal(SIZES, (1,), np.eye(6)).T
    np.testing.assert_allclose(mg.gram(SIZES, (1,)), a.T @ a)
    x = rng.normal(size=(5, 6))
    np.testing.assert_allclose(mg.matvec(a.T @ a, x), x @ (a.T @ a).T, rtol=1e-12)


def test_a_finest_level_without_the_detailed_cells_is_refused() -> None:
    measures = [mg.LevelMeasures(((0,),), (1.0,))]
    with pytest.raises(ValueError, match="measure the detailed cells"):
        mg.solve_structure([-1, 0], SIZES, [mg.LevelMeasures((DETAILED,), (1.0,)), *measures])
