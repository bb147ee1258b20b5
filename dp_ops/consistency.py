"""Consistent, non-negative, integer counts over a hierarchy, from independent noisy counts.

A hierarchy (nation > state > county, or a table with its margins when they nest) is a forest:
``parent[v]`` is the index of node v's parent, -1 for a root. Every node may carry a noisy count
``y[v]`` with noise variance ``var[v]`` (``inf`` for a node that was not measured). The truth
satisfies ``x[parent] = sum of x[children]``.

1. :func:`gls` is the generalized-least-squares (best linear unbiased) estimate under that
   constraint, by the exact two-pass method (bottom-up, then top-down; Hay et al. 2010 for equal
   variances, ``../shared/reference/dp-correctness.md`` section 5.3 in general). It is linear in
   ``y``, so it is post-processing (no privacy cost), and its variances are exact: the
   per-cell error bars stay exact at this step, and no node's variance grows.
2. :func:`consistent_counts` then makes the estimate non-negative and integral, top-down: a root is
   rounded and clamped at zero; the children of each parent are projected onto
   ``{x >= 0, sum x = parent's final value}`` (Euclidean projection onto a scaled simplex, Duchi
   et al. 2008) and rounded by largest remainders, which keeps their sum. Every level then adds up
   exactly. This step is non-linear: it biases small cells up and large ones down, and intervals
   after it are approximate.

Everything is vectorized with numpy over whole levels (no loop over nodes): one level's work is
a handful of ``bincount`` and sort calls, the same shape as one Spark aggregation per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def depths(parent: npt.ArrayLike) -> IntArray:
    """Depth of every node (roots 0); ValueError for a cycle or an out-of-range parent."""
    p = np.asarray(parent, dtype=np.int64)
    n = len(p)
    if np.any((p < -1) | (p >= n)):
        raise ValueError("parent indices must be -1 (a root) or the index of another node")
    depth = np.zeros(n, dtype=np.int64)
    current = p.copy()
    for _ in range(n + 1):
        above = current >= 0
        if not above.any():
            return depth
        depth[above] += 1
        current[above] = p[current[above]]
    raise ValueError("the parent array has a cycle")


@dataclass(frozen=True)
class Estimate:
    value: FloatArray
    """The consistent estimate of every node (parents equal the sum of their children)."""
    variance: FloatArray
    """Its exact variance, given the measurement variances."""


def gls(parent: npt.ArrayLike, y: npt.ArrayLike, var: npt.ArrayLike) -> Estimate:
    """The GLS estimate of every node under ``x[parent] = sum x[children]``.

    ``var[v]`` must be positive; ``inf`` marks an unmeasured node (its ``y`` is ignored). Every
    leaf must be measured, and so must every root's subtree have a measured node on each path.
    """
    p = np.asarray(parent, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(var, dtype=np.float64)
    n = len(p)
    if y.shape != (n,) or s.shape != (n,):
        raise ValueError("parent, y and var must have the same length")
    if np.any(~(s > 0)):
        raise ValueError("every variance must be > 0 (inf for an unmeasured node)")
    depth = depths(p)
    has_children = np.bincount(p[p >= 0], minlength=n) > 0
    if np.any(~has_children & np.isinf(s)):
        raise ValueError("every leaf needs a measurement (finite variance)")
    measured = np.isfinite(s)
    inv_s = np.where(measured, 1.0 / s, 0.0)
    y_over_s = np.where(measured, y * inv_s, 0.0)
    z = np.where(measured, y, 0.0)
    w = s.copy()
    sum_z = np.zeros(n)
    sum_w = np.zeros(n)
    max_depth = int(depth.max()) if n else 0
    for d in range(max_depth, 0, -1):  # bottom-up: combine each level's children in their parent
        kids = np.flatnonzero(depth == d)
        sum_z += np.bincount(p[kids], weights=z[kids], minlength=n)
        sum_w += np.bincount(p[kids], weights=w[kids], minlength=n)
        nodes = np.unique(p[kids])
        w[nodes] = 1.0 / (inv_s[nodes] + 1.0 / sum_w[nodes])
        z[nodes] = w[nodes] * (y_over_s[nodes] + sum_z[nodes] / sum_w[nodes])
    value = z.copy()
    variance = w.copy()
    for d in range(1, max_depth + 1):  # top-down: share each parent's correction by variance
        kids = np.flatnonzero(depth == d)
        up = p[kids]
        share = w[kids] / sum_w[up]
        value[kids] = z[kids] + share * (value[up] - sum_z[up])
        variance[kids] = w[kids] + share * share * (variance[up] - sum_w[up])
    return Estimate(value, variance)


def simplex_projection(group: npt.ArrayLike, v: npt.ArrayLike, total: npt.ArrayLike) -> FloatArray:
    """Per group g, the Euclidean projection of ``v[group == g]`` onto
    ``{x >= 0, sum x = total[g]}`` (``total[g] >= 0``): ``x = max(v - theta_g, 0)``.

    ``group``: a group index per element; ``total``: one total per group index.
    """
    g = np.asarray(group, dtype=np.int64)
    v = np.asarray(v, dtype=np.float64)
    t = np.asarray(total, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("totals must be >= 0")
    if len(v) == 0:
        return v.copy()
    order = np.lexsort((-v, g))  # by group, then value descending
    gs, vs = g[order], v[order]
    starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    run = np.repeat(starts, np.diff(np.r_[starts, len(gs)]))
    rank = np.arange(len(gs)) - run + 1  # 1-based rank inside the group
    cum = _segmented_cumsum(vs, starts)  # running sum inside the group
    candidate = (cum - t[gs]) / rank
    ok = vs - candidate > 0  # the prefix of the sorted group that stays positive
    k = np.zeros(t.shape, dtype=np.int64)
    np.maximum.at(k, gs[ok], rank[ok])
    last = run + k[gs] - 1  # position of the k-th largest value of the group
    theta_sorted = np.where(
        k[gs] > 0, (cum[np.maximum(last, 0)] - t[gs]) / np.maximum(k[gs], 1), 0.0
    )
    x = np.empty_like(v)
    x[order] = np.maximum(vs - theta_sorted, 0.0)
    empty = (k[gs] == 0) | (t[gs] == 0)  # a zero total: all zeros, exactly
    x[order[empty]] = 0.0
    return x


def _segmented_cumsum(values: FloatArray, starts: IntArray) -> FloatArray:
    """Running sums that restart at each index in ``starts`` (0 among them), each added in order
    from its group's first value: the bits of a per-group running sum (as Spark's window sum
    adds), which a global cumulative sum minus the sum before the group does not give."""
    out = np.empty_like(values)
    lengths = np.diff(np.r_[starts, len(values)])
    for size in np.unique(lengths):
        first = starts[lengths == size]
        block = values[first[:, None] + np.arange(size)[None, :]]
        out[first[:, None] + np.arange(size)[None, :]] = np.cumsum(block, axis=1)
    return out


def largest_remainder(group: npt.ArrayLike, x: npt.ArrayLike, total: npt.ArrayLike) -> IntArray:
    """Integers per group that sum to the integer ``total[g]`` and differ from ``x`` by < 1.

    ``x >= 0`` with ``sum x[group == g] == total[g]`` (up to rounding error): each element gets
    its floor, and the group's remaining units go to the largest fractional parts (ties to the
    lower index).
    """
    g = np.asarray(group, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(total, dtype=np.int64)
    base = np.floor(x + 1e-9).astype(np.int64)  # a value a hair below an integer is that integer
    frac = x - base
    missing = t - np.bincount(g, weights=base, minlength=len(t)).astype(np.int64)
    if np.any(missing < 0) or np.any(missing > np.bincount(g, minlength=len(t))):
        raise ValueError("the values of a group do not add up to its total")
    order = np.lexsort((np.arange(len(x)), -frac, g))
    gs = g[order]
    starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]]) if len(gs) else np.array([], int)
    run = np.repeat(starts, np.diff(np.r_[starts, len(gs)]))
    rank = np.arange(len(gs)) - run
    out = base.copy()
    out[order] += (rank < missing[gs]).astype(np.int64)
    return out


def consistent_counts(parent: npt.ArrayLike, estimate: npt.ArrayLike) -> IntArray:
    """Non-negative integers that add up at every level, from a consistent ``estimate``.

    Top-down: roots are rounded and clamped at zero; the children of each parent are projected
    onto the non-negative values that sum to the parent's final count, then rounded by largest
    remainders. Post-processing: costs no privacy, but biases small cells up, and rounding moves a
    cell by f(1 - f) in mean square (f the fractional part its family shares), at most 1/4.
    """
    return _top_down(parent, estimate, integer=True).astype(np.int64)


def consistent_nonnegative(parent: npt.ArrayLike, estimate: npt.ArrayLike) -> FloatArray:
    """The same top-down projection as ``consistent_counts`` without the rounding: non-negative
    real values that add up at every level (what rounding to whole persons starts from)."""
    return _top_down(parent, estimate, integer=False)


def _top_down(parent: npt.ArrayLike, estimate: npt.ArrayLike, integer: bool) -> FloatArray:
    p = np.asarray(parent, dtype=np.int64)
    f = np.asarray(estimate, dtype=np.float64)
    depth = depths(p)
    out = np.zeros(len(p), dtype=np.float64)
    roots = np.flatnonzero(depth == 0)
    # rounded half up, as Spark's round() rounds the roots on the Spark way
    out[roots] = np.maximum(np.floor(f[roots] + 0.5) if integer else f[roots], 0)
    for d in range(1, int(depth.max()) + 1 if len(p) else 1):
        kids = np.flatnonzero(depth == d)
        if len(kids) == 0:
            break
        parents, group = np.unique(p[kids], return_inverse=True)
        totals = out[parents]
        projected = simplex_projection(group, f[kids], totals)
        if integer:
            out[kids] = largest_remainder(group, projected, totals.astype(np.int64))
        else:
            out[kids] = projected
    return out
