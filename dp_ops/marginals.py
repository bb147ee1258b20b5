"""Least squares over a geography whose units are each measured by several marginal queries.

A table suite has attribute dimensions (sex, age group, race, ...) with domain sizes ``sizes``
and a geography (nation > state > county): a forest of units, every leaf at the finest level.
Each unit ``v`` has a detailed histogram ``h_v`` over the ``d = prod(sizes)`` attribute cells,
and a parent's histogram is the sum of its children's. At every level, each unit is measured by
marginal queries: a query keeps some attributes and sums out the others (``()`` is the unit's
total, all attributes the detailed cells), with independent noise of variance ``var`` per cell.

:func:`solve_structure` finds, from the tree's shape and the measurement variances alone (no
data), the matrices of the exact generalized-least-squares estimate of every unit's histogram
under the constraint that parents are sums of children: a bottom-up pass (each unit's estimate
from the measurements in its subtree, covariance ``C``) and a top-down pass (each unit's final
estimate from every measurement, covariance ``F``). It is the scalar two-pass method of
``dp_ops.consistency`` with d x d matrices: ``C_v = (J_v + V_v^-1)^-1`` with ``J_v`` the
information of v's own measurements and ``V_v`` the sum of its children's ``C``; top-down,
``final_c = m_c + C_c V_p^-1 (final_p - S_p)`` with ``S_p`` the sum of the children's bottom-up
estimates. Units with the same subtree shape share matrices (a *signature*), so the work grows
with the number of distinct shapes, not of units.

:func:`estimate` runs the data pass in numpy (the reference the Spark pipeline is checked
against). Products avoid BLAS (:func:`matvec`): its kernels differ between CPUs, and a task
computed again on another machine must give the same bits, since rounding to whole persons
follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Query = tuple[int, ...]
"""The attribute positions a marginal query keeps, ascending."""

MAX_CELLS = 1024
"""The most detailed cells per unit: the matrices are dense, d x d per signature."""


def query_cells(sizes: Sequence[int], query: Query) -> int:
    """How many cells the marginal ``query`` has."""
    return prod(sizes[i] for i in query)


def marginal(sizes: Sequence[int], query: Query, h: npt.ArrayLike) -> FloatArray:
    """``A_query h`` for rows of detailed histograms ``h`` (n x d, attribute cells in C order):
    the marginal cells (n x q), in C order over the kept attributes."""
    x = np.asarray(h, dtype=np.float64)
    n = x.shape[0]
    summed = tuple(1 + i for i in range(len(sizes)) if i not in query)
    out = x.reshape(n, *sizes).sum(axis=summed) if summed else x.reshape(n, *sizes)
    return np.ascontiguousarray(out.reshape(n, query_cells(sizes, query)))


def spread(sizes: Sequence[int], query: Query, y: npt.ArrayLike) -> FloatArray:
    """``A_query^T y``: each marginal cell's value copied to every detailed cell it sums."""
    v = np.asarray(y, dtype=np.float64)
    n = v.shape[0]
    kept = [sizes[i] if i in query else 1 for i in range(len(sizes))]
    full = np.broadcast_to(v.reshape(n, *kept), (n, *sizes))
    return np.ascontiguousarray(full.reshape(n, prod(sizes)))


def gram(sizes: Sequence[int], query: Query) -> FloatArray:
    """``A^T A`` of a marginal query: the Kronecker product of the identity for each kept
    attribute and the all-ones matrix for each summed one."""
    out: FloatArray = np.ones((1, 1))
    for i, n in enumerate(sizes):
        out = np.asarray(np.kron(out, np.eye(n) if i in query else np.ones((n, n))), np.float64)
    return out


def matvec(matrix: FloatArray, x: FloatArray) -> FloatArray:
    """Rows of ``x`` (n x d) times ``matrix^T``: ``out[r] = matrix @ x[r]``, summed by numpy's own
    reduction (not BLAS), so the bits depend on the inputs alone."""
    out = np.empty((x.shape[0], matrix.shape[0]))
    step = max(1, 2**22 // max(1, matrix.size))  # rows per chunk: at most 32 MiB of products
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        out[start : start + step] = np.add.reduce(chunk[:, None, :] * matrix[None, :, :], axis=2)
    return out


@dataclass(frozen=True)
class LevelMeasures:
    """What every unit of one geography level is measured by: queries and their variances."""

    queries: tuple[Query, ...]
    variances: tuple[float, ...]

    def information(self, sizes: Sequence[int]) -> FloatArray:
        """``J = sum_q A_q^T A_q / var_q``."""
        d = prod(sizes)
        out = np.zeros((d, d))
        for q, var in zip(self.queries, self.variances, strict=True):
            out += gram(sizes, q) / var
        return out

    def eta(self, sizes: Sequence[int], ys: Sequence[npt.ArrayLike]) -> FloatArray:
        """``sum_q A_q^T y_q / var_q`` for rows of units (one array per query, n x q)."""
        total: FloatArray | None = None
        for q, var, y in zip(self.queries, self.variances, ys, strict=True):
            part = spread(sizes, q, y) / var
            total = part if total is None else total + part
        if total is None:
            raise ValueError("a level needs at least one query")
        return total


@dataclass(frozen=True)
class Structure:
    """The data-independent part of the estimate, by signature.

    ``up[v]``: the bottom-up signature of node v (its level and its children's signatures);
    ``down[v]``: its top-down signature (its own and its parent's). ``C[s]``: covariance of the
    bottom-up estimate of a node of signature s; ``V_inv[s]``: the inverse of the sum of its
    children's C (None for a leaf); ``F[t]``: covariance of the final estimate of a node of
    top-down signature t.
    """

    up: IntArray
    down: IntArray
    C: tuple[FloatArray, ...]
    V_inv: tuple[FloatArray | None, ...]
    F: tuple[FloatArray, ...]


def _levels(parent: IntArray) -> IntArray:
    depth = np.zeros(len(parent), dtype=np.int64)
    for v in range(len(parent)):
        if parent[v] >= v:
            raise ValueError("list every node after its parent (parent[v] < v, -1 for a root)")
        depth[v] = 0 if parent[v] < 0 else depth[parent[v]] + 1
    return depth


def solve_structure(
    parent: npt.ArrayLike, sizes: Sequence[int], measures: Sequence[LevelMeasures]
) -> Structure:
    """The matrices of the two passes for a forest (``parent[v] < v``, -1 for a root) whose
    level-l nodes are measured by ``measures[l]``; every leaf must be at the last level, where
    the detailed cells (or queries that determine them) must be measured."""
    p = np.asarray(parent, dtype=np.int64)
    depth = _levels(p)
    last = len(measures) - 1
    children: list[list[int]] = [[] for _ in range(len(p))]
    for v in range(len(p)):
        if p[v] >= 0:
            children[p[v]].append(v)
    for v in range(len(p)):
        if depth[v] > last or (not children[v] and depth[v] != last):
            raise ValueError("every leaf must be at the finest level, and no deeper")
    information = [m.information(sizes) for m in measures]
    up_ids: dict[tuple[int, tuple[int, ...]], int] = {}
    up = np.zeros(len(p), dtype=np.int64)
    C: list[FloatArray] = []
    V_inv: list[FloatArray | None] = []
    for v in range(len(p) - 1, -1, -1):  # children come after their parent
        key = (int(depth[v]), tuple(sorted(int(up[c]) for c in children[v])))
        if key not in up_ids:
            up_ids[key] = len(C)
            J = information[depth[v]]
            if children[v]:
                V = sum((C[up[c]] for c in children[v]), np.zeros_like(J))
                Vi = _inverse(V)
                C.append(_inverse(J + Vi))
                V_inv.append(Vi)
            else:
                C.append(_inverse(J))
                V_inv.append(None)
        up[v] = up_ids[key]
    down_ids: dict[tuple[int, int], int] = {}
    down = np.zeros(len(p), dtype=np.int64)
    F: list[FloatArray] = []
    for v in range(len(p)):
        above = -1 if p[v] < 0 else int(down[p[v]])
        pair = (int(up[v]), above)
        if pair not in down_ids:
            down_ids[pair] = len(F)
            c = C[up[v]]
            if above < 0:
                F.append(c)
            else:
                vi = V_inv[up[p[v]]]
                assert vi is not None
                g = c @ vi
                F.append(_symmetric(np.asarray(c - g @ c + g @ F[above] @ g.T, np.float64)))
        down[v] = down_ids[pair]
    return Structure(up, down, tuple(C), tuple(V_inv), tuple(F))


def _inverse(m: FloatArray) -> FloatArray:
    try:
        return _symmetric(np.asarray(np.linalg.inv(m), np.float64))
    except np.linalg.LinAlgError:
        raise ValueError(
            "the measurements do not determine every detailed cell: measure the detailed "
            "cells at the finest level"
        ) from None


def _symmetric(m: FloatArray) -> FloatArray:
    return (m + m.T) / 2


def estimate(
    parent: npt.ArrayLike, structure: Structure, eta: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(bottom-up estimate m, children's sum S, final estimate) of every node's histogram, from
    ``eta[v] = sum_q A_q^T y_q / var_q`` of its own measurements (n x d)."""
    p = np.asarray(parent, dtype=np.int64)
    e = np.asarray(eta, dtype=np.float64)
    m = np.zeros_like(e)
    s = np.zeros_like(e)
    children: list[list[int]] = [[] for _ in range(len(p))]
    for v in range(len(p)):
        if p[v] >= 0:
            children[p[v]].append(v)
    for v in range(len(p) - 1, -1, -1):
        for c in children[v]:  # in node order, as the Spark pass adds them (key order)
            s[v] += m[c]
        vi = structure.V_inv[structure.up[v]]
        inner = e[v : v + 1] if vi is None else e[v : v + 1] + matvec(vi, s[v : v + 1])
        m[v] = matvec(structure.C[structure.up[v]], inner)[0]
    final = m.copy()
    for v in range(len(p)):
        if p[v] >= 0:
            vi = structure.V_inv[structure.up[p[v]]]
            assert vi is not None
            gain = structure.C[structure.up[v]] @ vi
            final[v] = m[v] + matvec(gain, (final[p[v]] - s[p[v]])[None, :])[0]
    return m, s, final


def cell_variances(structure: Structure, sizes: Sequence[int], query: Query) -> FloatArray:
    """Per top-down signature, the variance of each marginal cell of ``query`` in the final
    estimate (signatures x q): ``diag(A F A^T)``."""
    out = []
    for f in structure.F:
        a_f = marginal(sizes, query, f)  # A F as rows of F's columns: (A F)^T rows
        out.append(np.diag(marginal(sizes, query, a_f.T.copy())))
    return np.array(out)


def estimate_by_level(
    parent: npt.ArrayLike, structure: Structure, eta: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`estimate`, a level at a time and a signature at a time (nodes in level order, as
    :func:`solve_structure` takes them): the same bits, without a loop over nodes. Children's
    estimates are added into their parent in node order, as the Spark passes add them."""
    p = np.asarray(parent, dtype=np.int64)
    e = np.asarray(eta, dtype=np.float64)
    depth = _levels(p)
    m = np.zeros_like(e)
    s = np.zeros_like(e)
    top = int(depth.max()) if len(p) else 0
    for level in range(top, -1, -1):
        nodes = np.flatnonzero(depth == level)
        for sig in np.unique(structure.up[nodes]):
            at = nodes[structure.up[nodes] == sig]
            vi = structure.V_inv[sig]
            inner = e[at] if vi is None else e[at] + matvec(vi, s[at])
            m[at] = matvec(structure.C[sig], inner)
        kids = nodes[p[nodes] >= 0]
        for v in kids:  # in node order: the sum's bits do not depend on grouping
            s[p[v]] += m[v]
    final = m.copy()
    for level in range(1, top + 1):
        nodes = np.flatnonzero(depth == level)
        pairs = structure.up[nodes] * (int(structure.up.max()) + 1) + structure.up[p[nodes]]
        for pair in np.unique(pairs):
            at = nodes[pairs == pair]
            vi = structure.V_inv[structure.up[p[at[0]]]]
            assert vi is not None
            gain = structure.C[structure.up[at[0]]] @ vi
            final[at] = m[at] + matvec(gain, final[p[at]] - s[p[at]])
    return m, s, final
