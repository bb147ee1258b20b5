"""Proportions of randomized-response answers: the design's unbiased estimate, its standard
error and a normal interval, from a cell's noisy count and noisy number of yes answers.

Randomized response: each respondent answers truthfully with probability ``b = p_truth`` and
otherwise reports a coin flip that says yes with probability ``p_yes``; a report is yes with
probability ``lambda = a + b * pi`` for a true proportion ``pi``, where ``a = (1 - b) * p_yes``.
So ``(lambda_hat - a) / b`` is unbiased for ``pi`` when ``lambda_hat`` is (the share of yes
reports; its noise has mean zero). Given the persons, the coins are the only randomness of the
design: ``Var(lambda_hat) = (pi * v1 + (1 - pi) * v0) / n`` with ``v1 = (a + b)(1 - a - b)`` and
``v0 = a (1 - a)`` (a census asked directly, ``a = 0, b = 1``, has none). The noise adds
``(Var(sum noise) + lambda^2 Var(count noise)) / n^2`` (delta method; the two are independent).
Estimates are not clamped to [0, 1]: clamping would bias them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Design:
    """``a``: P(yes report) for a true no; ``b``: how much a true yes adds to it (p_truth)."""

    a: float = 0.0
    b: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.a < 1 and 0 < self.b <= 1 and self.a + self.b <= 1):
            raise ValueError(f"not a randomized-response design: a={self.a}, b={self.b}")

    @property
    def variances(self) -> tuple[float, float]:
        """(v1, v0): the variance of one report of a true yes, and of a true no."""
        yes = self.a + self.b
        return yes * (1 - yes), self.a * (1 - self.a)


def proportion_estimates(
    share: Floats,
    n: Floats,
    design: Design,
    sum_variance: float,
    count_variance: float,
    z: float,
) -> tuple[Floats, Floats, Floats, Floats]:
    """(estimate, standard error, interval low, interval high) per cell from its noisy share of
    yes reports and its noisy count ``n`` (at least 1). ``z``: the normal quantile of the
    interval (1.96 for 95%). The Spark path (pipelines.postprocess) performs the same double
    operations in the same order."""
    v1, v0 = design.variances
    estimate = (share - design.a) / design.b
    pi = np.minimum(np.maximum(estimate, 0.0), 1.0)
    lam = np.minimum(np.maximum(share, 0.0), 1.0)
    v_design = (pi * v1 + (1.0 - pi) * v0) / n
    v_noise = (sum_variance + lam * lam * count_variance) / (n * n)
    se = np.sqrt(v_design + v_noise) / design.b
    return estimate, se, estimate - z * se, estimate + z * se
