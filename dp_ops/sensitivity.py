"""Sensitivities of the per-partition aggregates, from the declared contribution bounds.

A privacy unit contributes to at most ``L0`` partitions (``max_partitions``) and at most ``Linf``
rows per partition (``max_rows``). Adding or removing one unit therefore changes:

* a row count by at most ``Linf`` in each of ``L0`` partitions;
* a distinct-unit count by at most 1 in each of ``L0`` partitions;
* a sum of values quantized to integers in ``[q_lo, q_hi]`` by at most
  ``Linf * max(|q_lo|, |q_hi|)`` in each of ``L0`` partitions.

The L1 sensitivity (for Laplace noise) multiplies the per-partition bound by ``L0``; the squared L2
sensitivity (for Gaussian noise) by ``L0`` as well, because it adds squares.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sensitivity:
    """Per-partition bound ``per_partition`` over ``partitions`` partitions."""

    per_partition: int
    partitions: int

    @property
    def l1(self) -> int:
        return self.per_partition * self.partitions

    @property
    def l2_squared(self) -> int:
        return self.per_partition * self.per_partition * self.partitions


def count_sensitivity(max_partitions: int, max_rows: int) -> Sensitivity:
    return Sensitivity(per_partition=max_rows, partitions=max_partitions)


def unit_count_sensitivity(max_partitions: int) -> Sensitivity:
    return Sensitivity(per_partition=1, partitions=max_partitions)


def sum_sensitivity(max_partitions: int, max_rows: int, q_lo: int, q_hi: int) -> Sensitivity:
    return Sensitivity(
        per_partition=max_rows * max(abs(q_lo), abs(q_hi)), partitions=max_partitions
    )
