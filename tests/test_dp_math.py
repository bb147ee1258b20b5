"""Thresholds, accounting, accuracy and sensitivities against published test vectors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from dp_ops import accounting, accuracy, selection
from dp_ops.fixed_point import default_granularity, grid_bounds
from dp_ops.keyed_stream import KeyedStreams, new_key
from dp_ops.rational import laplace_scale, round_up
from dp_ops.samplers import discrete_gaussian, discrete_laplace
from dp_ops.sensitivity import count_sensitivity, sum_sensitivity, unit_count_sensitivity

VECTORS = [  # epsilon, delta, L0, Laplace T, Gaussian T  (shared/reference dp-correctness 2.5)
    (1.0, 1e-5, 1, 11.819778, 18.159683),
    (1.0, 1e-5, 5, 63.146061, 42.291092),
    (0.5, 1e-8, 3, 113.956875, 104.638759),
]


@pytest.mark.parametrize(("eps", "delta", "l0", "lap", "gauss"), VECTORS)
def test_threshold_vectors(eps: float, delta: float, l0: int, lap: float, gauss: float) -> None:
    assert selection.laplace_threshold(eps, delta, l0) == pytest.approx(lap, abs=1e-6)
    assert selection.gaussian_threshold(eps, delta, l0) == pytest.approx(gauss, rel=1e-3)


TG_VECTORS = [  # epsilon, delta, L0, c1, p(n) for n = 1, 2, 5, 10, 20, 40
    (1.0, 1e-5, 1, 11, (1.000e-5, 3.718e-5, 8.579e-4, 1.282e-1, 9.999e-1, 1.0)),
    (1.0, 1e-5, 5, 55, (2.000e-6, 4.443e-6, 1.552e-5, 5.771e-5, 4.842e-4, 2.692e-2)),
    (0.5, 1e-8, 3, 103, (3.333e-9, 7.271e-9, 2.391e-8, 7.893e-8, 4.968e-7, 1.442e-5)),
]


@pytest.mark.parametrize(("eps", "delta", "l0", "c1", "probs"), TG_VECTORS)
def test_truncated_geometric_vectors(
    eps: float, delta: float, l0: int, c1: int, probs: tuple[float, ...]
) -> None:
    assert selection.truncated_geometric_c1(eps, delta, l0) == c1
    table = selection.truncated_geometric_probabilities(eps, delta, l0)
    for n, expected in zip((1, 2, 5, 10, 20, 40), probs, strict=True):
        got = float(table[n]) if n < len(table) else 1.0
        assert got == pytest.approx(expected, rel=2e-3, abs=1e-4 if expected > 0.9 else 0)


def test_pre_threshold_shifts_the_laplace_threshold() -> None:
    assert selection.laplace_threshold(1, 1e-5, 1, pre_threshold=10) == pytest.approx(
        20.819778, abs=1e-6
    )


@pytest.mark.parametrize("scale", [1.0, 2.0, 6.5])
def test_discrete_laplace_threshold_is_the_smallest_that_keeps_delta(scale: float) -> None:
    s = round_up(scale)
    d = selection.adjusted_delta(1e-5, 2)
    t = selection.discrete_laplace_threshold(s, d)
    # a partition with a single unit passes iff 1 + Z >= t, i.e. Z >= t - 1
    assert (
        selection.discrete_laplace_tail(s, t - 1) <= d < selection.discrete_laplace_tail(s, t - 2)
    )


def test_discrete_gaussian_threshold_bounds_the_tail() -> None:
    v = round_up(16.0)
    d = selection.adjusted_delta(1e-6, 1)
    t = selection.discrete_gaussian_threshold(v, d)
    assert selection.discrete_gaussian_tail_bound(v, t - 1) <= d
    assert selection.discrete_gaussian_tail_bound(v, t - 2) > d
    # the bound really bounds the exact tail (summed pmf)
    xs = np.arange(0, 400)
    w = np.exp(-(xs.astype(float) ** 2) / 32.0)
    norm = w[0] + 2 * w[1:].sum()
    exact = w[t - 1 :].sum() / norm
    assert exact <= selection.discrete_gaussian_tail_bound(v, t - 1)


@pytest.mark.parametrize(
    ("rho", "delta", "eps"),
    [(2.556, 1e-10, 17.143), (0.07, 1e-10, 2.387), (2.63, 1e-10, 17.431), (0.125, 1e-6, 2.419)],
)
def test_zcdp_conversion_vectors(rho: float, delta: float, eps: float) -> None:
    assert accounting.zcdp_epsilon(rho, delta) == pytest.approx(eps, abs=1e-3)
    assert accounting.zcdp_delta(rho, accounting.zcdp_epsilon(rho, delta)) <= delta * (1 + 1e-9)


def test_zcdp_rho_is_a_safe_inverse() -> None:
    rho = accounting.zcdp_rho(1.0, 1e-5)
    assert accounting.zcdp_epsilon(float(rho), 1e-5) <= 1.0
    assert accounting.zcdp_epsilon(float(rho) * 1.01, 1e-5) > 1.0


def test_split_is_exact() -> None:
    parts = accounting.split(Fraction(1), [1, 1, 1])
    assert sum(parts) == 1 and parts[0] == Fraction(1, 3)
    with pytest.raises(ValueError, match="positive"):
        accounting.split(Fraction(1), [1, 0])


def test_accuracy_matches_closed_forms_and_samples() -> None:
    assert accuracy.discrete_laplace_sd(Fraction(1)) == pytest.approx(1.3570, abs=1e-4)
    assert accuracy.discrete_laplace_halfwidth(Fraction(2), 0.05) == 6
    assert accuracy.discrete_gaussian_halfwidth(Fraction(4), 0.05) == (4, True)
    sd, exact = accuracy.discrete_gaussian_sd(Fraction(100))
    assert exact and sd == pytest.approx(10.0, rel=1e-6)
    ids = np.random.default_rng(9).integers(0, 2**63, size=(40_000, 2), dtype=np.uint64)
    key = new_key()
    lap = discrete_laplace(KeyedStreams(key, ids), laplace_scale(1, 0.5))
    h = accuracy.discrete_laplace_halfwidth(laplace_scale(1, 0.5), 0.05)
    q = math.exp(-1 / float(laplace_scale(1, 0.5)))
    tail = 2 * q ** (h + 1) / (1 + q)  # exact P(|Z| > h): at most 5%, and h is the smallest such
    assert tail <= 0.05 < 2 * q**h / (1 + q)
    assert abs(np.mean(np.abs(lap) > h) - tail) < 5 * math.sqrt(tail / len(lap))
    gau = discrete_gaussian(KeyedStreams(key, ids), round_up(25.0))
    hg, _ = accuracy.discrete_gaussian_halfwidth(round_up(25.0), 0.05)
    assert np.mean(np.abs(gau) > hg) <= 0.05 + 0.01
    big, exact_big = accuracy.discrete_gaussian_halfwidth(round_up(1e6), 0.05)
    assert not exact_big and big >= 1.96 * 1000


@pytest.mark.parametrize("parameter", [Fraction(1, 2), Fraction(2), Fraction(7, 3), Fraction(40)])
def test_stated_coverage_is_the_exact_probability_of_the_whole_step_interval(
    parameter: Fraction,
) -> None:
    """A whole-number half-width overshoots the level asked; the coverage stated with it is the
    exact probability (the mass function summed independently here), at least the level, and
    one step less would miss the level. Checked against draws of the samplers too."""
    alpha = 0.05
    z = np.arange(-4000, 4001)
    ids = np.random.default_rng(3).integers(0, 2**63, size=(200_000, 2), dtype=np.uint64)
    streams = KeyedStreams(new_key(), ids)
    for mechanism in ("laplace", "gaussian"):
        if mechanism == "laplace":
            h = accuracy.discrete_laplace_halfwidth(parameter, alpha)
            stated, exact = accuracy.discrete_laplace_coverage(parameter, h), True
            below = accuracy.discrete_laplace_coverage(parameter, h - 1) if h else 0.0
            mass = np.exp(-np.abs(z) / float(parameter))
            draws = discrete_laplace(streams, parameter)
        else:
            h, _ = accuracy.discrete_gaussian_halfwidth(parameter, alpha)
            stated, exact = accuracy.discrete_gaussian_coverage(parameter, h)
            below = accuracy.discrete_gaussian_coverage(parameter, h - 1)[0] if h else 0.0
            mass = np.exp(-(z.astype(float) ** 2) / (2 * float(parameter)))
            draws = discrete_gaussian(streams, parameter)
        truth = float(mass[np.abs(z) <= h].sum() / mass.sum())
        assert exact and stated == pytest.approx(truth, abs=1e-12), mechanism
        assert below < 1 - alpha <= stated, mechanism
        observed = float(np.mean(np.abs(draws) <= h))
        spread = 5 * math.sqrt(stated * (1 - stated) / len(draws))
        assert abs(observed - stated) <= spread, (mechanism, observed, stated)
    # control: stating the level asked (95%) would be off by far more than the draws' spread
    small = Fraction(1, 2)
    h = accuracy.discrete_laplace_halfwidth(small, alpha)
    assert accuracy.discrete_laplace_coverage(small, h) - (1 - alpha) > 0.01
    big, exact_big = accuracy.discrete_gaussian_coverage(round_up(1e6), 1960)
    assert not exact_big and 0.949 < big < 0.951  # a lower bound from the tail bound


@pytest.mark.parametrize("parameter", [Fraction(1, 2), Fraction(3), Fraction(50)])
def test_clamping_shift_is_the_expected_rise_of_a_clamped_cell(parameter: Fraction) -> None:
    """E[max(n + Z, 0)] - n, stated per true count n: against an independent sum over the mass
    function, and against the samplers' draws; it falls as n grows."""
    z = np.arange(-6000, 6001)
    ids = np.random.default_rng(5).integers(0, 2**63, size=(200_000, 2), dtype=np.uint64)
    streams = KeyedStreams(new_key(), ids)
    for mechanism in ("laplace", "gaussian"):
        if mechanism == "laplace":
            mass = np.exp(-np.abs(z) / float(parameter))
            draws = discrete_laplace(streams, parameter)

            def shift(n: int) -> tuple[float, bool]:
                return accuracy.discrete_laplace_clamping_shift(parameter, n), True
        else:
            mass = np.exp(-(z.astype(float) ** 2) / (2 * float(parameter)))
            draws = discrete_gaussian(streams, parameter)

            def shift(n: int) -> tuple[float, bool]:
                return accuracy.discrete_gaussian_clamping_shift(parameter, n)

        mass = mass / mass.sum()
        previous = math.inf
        for n in (0, 1, 4, 20):
            stated, exact = shift(n)
            truth = float(np.sum(np.maximum(n + z, 0) * mass) - n)
            assert exact and stated == pytest.approx(truth, rel=1e-9, abs=1e-12), (mechanism, n)
            clamped = np.maximum(n + draws, 0) - n
            spread = 5 * float(np.std(clamped)) / math.sqrt(len(draws))
            assert abs(float(np.mean(clamped)) - stated) <= spread + 1e-12, (mechanism, n)
            assert stated <= previous
            previous = stated
    # control: unclamped draws do not rise (the test sees the difference)
    assert abs(float(np.mean(draws))) < accuracy.discrete_gaussian_clamping_shift(parameter, 0)[0]
    exact_side, _ = accuracy.discrete_gaussian_clamping_shift(round_up(199.0**2), 100)
    approx_side, exact = accuracy.discrete_gaussian_clamping_shift(round_up(201.0**2), 100)
    assert not exact and approx_side == pytest.approx(exact_side * 201 / 199, rel=0.02)


def test_sensitivities_follow_the_bounds() -> None:
    assert count_sensitivity(3, 2).l1 == 6 and count_sensitivity(3, 2).l2_squared == 12
    assert unit_count_sensitivity(4).l1 == 4 and unit_count_sensitivity(4).l2_squared == 4
    s = sum_sensitivity(2, 3, -5, 10)
    assert s.per_partition == 30 and s.l1 == 60


def test_fixed_point_grid() -> None:
    g = default_granularity(0, 250_000)
    assert g == 2.0 and math.log2(g).is_integer()
    assert grid_bounds(-1.5, 3.0, 1.0) == (-2, 3)
