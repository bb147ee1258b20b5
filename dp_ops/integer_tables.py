"""Non-negative integer detailed tables for the units of a geography, top-down, keeping two
margins at every step: each unit's total and its parent's cells.

A table suite's least squares gives, per geographic unit, a real estimate of its detailed table
(one value per attribute cell, d cells) that is consistent (children add up to their parent) but
may be negative and is not whole. Releasing whole persons needs a non-negative integer table per
unit whose children still add up. Projecting each cell's column of children alone (the children
of a parent for one attribute cell, as a chain of nested levels does) keeps the cells but lets
the units' totals drift: a child with negative estimates in many sparse cells is pushed up once
per cell, so small units' totals are biased up and large ones' down, and their intervals stop
covering. Here each parent's children are fitted as one k x d matrix with both margins fixed:

1. the children's totals: their least-squares totals projected onto the non-negative values
   that add up to the parent's integer total, rounded by largest remainders (``rows``);
2. the nearest non-negative real matrix with those row sums and the parent's integer cells as
   column sums, by alternating Euclidean projections onto the two sets of simplices (rows, then
   columns; von Neumann), which converges in a handful of rounds on census-like tables;
3. controlled rounding: floors, then per column the largest fractional parts (columns exact),
   then a maximum flow that swaps units within columns until every row sum is exact too. The
   2-D transportation polytope is integral, so such a rounding exists whenever step 2 ends on the
   margins; every cell moves by less than one.

Roots (the coarsest units) have no parent: their total is rounded half up and clamped at zero,
and their cells are projected onto it and rounded by largest remainders.

Everything here is post-processing of noisy values (no privacy cost) and deterministic: the same
inputs in the same order give the same bits, whether the driver or an executor runs it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse.csgraph import maximum_flow

from dp_ops.consistency import largest_remainder

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ROUNDS = 100
"""At most this many alternating rounds in step 2 (census-like tables need fewer than ten)."""
TOLERANCE = 1e-7
"""Step 2 stops when every column sum is within this of its target."""
_WHOLE = 1e-9
"""A value this close below an integer is that integer (floating-point residue)."""


def simplex_rows(m: npt.ArrayLike, totals: npt.ArrayLike) -> FloatArray:
    """Each row of ``m`` projected (Euclidean) onto ``{x >= 0, sum x = totals[row]}``: ``x =
    max(row - theta, 0)`` with one threshold per row (Duchi et al. 2008). A zero total gives
    zeros. Row by row: a row's result does not depend on the other rows."""
    m = np.asarray(m, dtype=np.float64)
    t = np.asarray(totals, dtype=np.float64)
    if m.ndim != 2 or t.shape != (m.shape[0],):
        raise ValueError("m must be 2-D with one total per row")
    if np.any(t < 0):
        raise ValueError("totals must be >= 0")
    n = m.shape[1]
    if m.size == 0:
        return m.copy()
    ordered = -np.sort(-m, axis=1)
    running = np.cumsum(ordered, axis=1)
    candidate = (running - t[:, None]) / np.arange(1, n + 1)
    kept = np.maximum((ordered - candidate > 0).sum(axis=1), 1)
    theta = (running[np.arange(len(t)), kept - 1] - t) / kept
    out: FloatArray = np.maximum(m - theta[:, None], 0.0)
    out[t == 0] = 0.0
    return out


def _totals(m: FloatArray) -> FloatArray:
    """Row sums added in cell order (the same bits for a row alone or in any batch)."""
    out: FloatArray = np.cumsum(m, axis=1)[:, -1] if m.shape[1] else np.zeros(m.shape[0])
    return out


def root_counts(estimate: npt.ArrayLike) -> IntArray:
    """Per row (a root unit's real detailed table), non-negative integers whose total is the
    row's total rounded half up (zero if negative)."""
    x = np.asarray(estimate, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("estimate must be units x cells")
    totals = np.maximum(np.floor(_totals(x) + 0.5), 0.0)
    projected = simplex_rows(x, totals)
    group = np.repeat(np.arange(x.shape[0]), x.shape[1])
    counts = largest_remainder(group, projected.reshape(-1), totals.astype(np.int64))
    return counts.reshape(x.shape)


def children_counts(estimate: npt.ArrayLike, parent: npt.ArrayLike) -> IntArray:
    """A parent's children (rows, k x d real estimates) as non-negative integers whose columns
    add up to ``parent`` (its d integer cells) and whose row sums are the children's estimated
    totals made whole (steps 1-3 of the module docstring).

    Costs no privacy. Accuracy: a child's total moves from its estimate only by the clamping of
    negative totals and by less than one in rounding; a cell moves by its share of the
    non-negativity correction and by less than one in rounding.
    """
    x = np.ascontiguousarray(estimate, dtype=np.float64)
    p = np.asarray(parent, dtype=np.int64)
    if x.ndim != 2 or p.shape != (x.shape[1],):
        raise ValueError("estimate must be children x cells, with one parent value per cell")
    if np.any(p < 0):
        raise ValueError("the parent's cells must be non-negative")
    k, d = x.shape
    total = int(p.sum())
    if k == 0:
        if total:
            raise ValueError("a parent with a positive total needs children")
        return np.zeros((0, d), dtype=np.int64)
    shares = simplex_rows(_totals(x)[None, :], np.array([float(total)]))[0]
    rows = largest_remainder(np.zeros(k, dtype=np.int64), shares, np.array([total]))
    columns = p.astype(np.float64)
    y = x
    for _ in range(ROUNDS):
        y = simplex_rows(y.T, columns).T
        y = simplex_rows(y, rows.astype(np.float64))
        if np.max(np.abs(np.cumsum(y, axis=0)[-1] - columns), initial=0.0) <= TOLERANCE:
            break
    return controlled_rounding(y, rows, p)


def controlled_rounding(y: npt.ArrayLike, rows: npt.ArrayLike, columns: npt.ArrayLike) -> IntArray:
    """Integers within one of ``y`` (non-negative, k x d) with row sums ``rows`` and column sums
    ``columns`` (integers, the sums of ``y`` up to floating-point residue).

    Floors, then each column's largest fractional parts (ties to the lower row), then a maximum
    flow over the fractional cells that moves units within columns from rows over their sum to
    rows under it. A cell that was whole stays whole. If ``y`` is too far off its margins for
    that (it should not be), rows are kept exact and columns by each row's largest remainders.
    """
    y = np.asarray(y, dtype=np.float64)
    r = np.asarray(rows, dtype=np.int64)
    c = np.asarray(columns, dtype=np.int64)
    k, d = y.shape
    base = np.floor(y + _WHOLE)
    frac = np.clip(y - base, 0.0, None)
    base_int = base.astype(np.int64)
    open_ = frac > _WHOLE
    need = c - base_int.sum(axis=0)
    order = np.argsort(-np.where(open_, frac, -1.0), axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(k)[:, None], (k, d)), axis=0)
    up = (rank < need[None, :]) & open_
    counts: IntArray = base_int + up
    if np.array_equal(counts.sum(axis=0), c) and np.all(base_int >= 0):
        short = r - counts.sum(axis=1)
        if not np.any(short):
            return counts
        swapped = _swap_within_columns(up, open_, short)
        if swapped is not None:
            fixed: IntArray = base_int + swapped
            return fixed
    group = np.repeat(np.arange(k), d)
    fitted = simplex_rows(y, r.astype(np.float64)).reshape(-1)
    return largest_remainder(group, fitted, r).reshape(k, d)


def _swap_within_columns(up: BoolArray, open_: BoolArray, short: IntArray) -> BoolArray | None:
    """``up`` changed so that row i gains ``short[i]`` (negative: loses) while every column keeps
    its sum: a maximum flow from rows short of their sum, through (row -> column) cells that can
    go up and (column -> row) cells that can go down, to rows over it. None if it cannot."""
    k, d = up.shape
    source, sink = 0, k + d + 1
    gain, lose = np.flatnonzero(short > 0), np.flatnonzero(short < 0)
    add_r, add_c = np.nonzero(open_ & ~up)
    drop_r, drop_c = np.nonzero(up)
    tail = np.concatenate([np.zeros(len(gain), np.int64), 1 + add_r, 1 + k + drop_c, 1 + lose])
    head = np.concatenate([1 + gain, 1 + k + add_c, 1 + drop_r, np.full(len(lose), sink)])
    capacity = np.concatenate(
        [short[gain], np.ones(len(add_r) + len(drop_r), np.int64), -short[lose]]
    ).astype(np.int32)
    graph = sparse.csr_matrix((capacity, (tail, head)), shape=(k + d + 2, k + d + 2))
    result = maximum_flow(graph, source, sink)
    if int(result.flow_value) != int(short[gain].sum()):
        return None
    flow = result.flow.tocsr()
    added = np.asarray(flow[1 + add_r, 1 + k + add_c]).reshape(-1) > 0
    dropped = np.asarray(flow[1 + k + drop_c, 1 + drop_r]).reshape(-1) > 0
    out = up.copy()
    out[add_r[added], add_c[added]] = True
    out[drop_r[dropped], drop_c[dropped]] = False
    return out
