"""Exact samplers: distribution tests that accept the true scale and reject a 30% error."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest

from dp_ops import table_samplers
from dp_ops.keyed_stream import KeyedStreams, ids_from_digests, label_id, new_key
from dp_ops.rational import Rational, gaussian_variance, laplace_scale, round_up
from dp_ops.samplers import (
    _discrete_gaussian_table,
    bernoulli_exp,
    discrete_gaussian,
    discrete_gaussian_rejection,
    discrete_laplace,
    discrete_laplace_rejection,
    uniform_below,
)
from dp_ops.table_samplers import exp_bounds
from tests.stats import ALPHA, chi_square_pvalue, dgauss_pmf, dlap_pmf

N = 60_000


def streams(n: int = N, key: bytes | None = None, seed: int = 0) -> KeyedStreams:
    ids = np.random.default_rng(seed).integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    return KeyedStreams(key or new_key(), ids)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0, 25.0])
def test_discrete_laplace_matches_its_pmf_and_rejects_wrong_scales(scale: float) -> None:
    sample = discrete_laplace(streams(), round_up(scale))
    assert sample.dtype == np.int64
    assert chi_square_pvalue(sample, lambda s: dlap_pmf(scale, s)) > ALPHA
    for wrong in (0.7 * scale, 1.3 * scale):  # controls: a 30% scale error must be detected
        assert chi_square_pvalue(sample, lambda s, w=wrong: dlap_pmf(w, s)) < ALPHA


@pytest.mark.parametrize("sigma", [0.8, 2.0, 10.0])
def test_discrete_gaussian_matches_its_pmf_and_rejects_wrong_scales(sigma: float) -> None:
    variance = round_up(sigma * sigma)
    sample = discrete_gaussian(streams(), variance)
    assert chi_square_pvalue(sample, lambda s: dgauss_pmf(float(variance), s)) > ALPHA
    for wrong in (0.7 * sigma, 1.3 * sigma):
        assert chi_square_pvalue(sample, lambda s, w=wrong: dgauss_pmf(w * w, s)) < ALPHA


def test_large_scales_keep_exact_integer_outputs_and_their_spread() -> None:
    q = math.exp(-1e-9)
    s = round_up(1e9)
    for big in (
        discrete_laplace(streams(20_000), s),  # tables: three truncated levels and a top
        discrete_laplace_rejection(streams(20_000), np.arange(20_000), s.numerator, s.denominator),
    ):
        assert big.dtype == np.int64
        assert abs(np.var(big.astype(float)) / (2 * q / (1 - q) ** 2) - 1) < 0.15
    v = round_up(1e12)  # sigma = 10^6
    for g in (
        discrete_gaussian(streams(20_000), v),
        discrete_gaussian_rejection(streams(20_000), v),
    ):
        assert abs(np.std(g.astype(float)) / 1e6 - 1) < 0.05


def test_rejection_samplers_match_their_pmfs() -> None:
    """The CKS20 rejection samplers serve scales beyond the tables and the Gaussian's far tail."""
    scale = round_up(3.0)
    lap = discrete_laplace_rejection(streams(), np.arange(N), scale.numerator, scale.denominator)
    assert chi_square_pvalue(lap, lambda s: dlap_pmf(3.0, s)) > ALPHA
    assert chi_square_pvalue(lap, lambda s: dlap_pmf(3.9, s)) < ALPHA
    variance = round_up(4.0)
    gau = discrete_gaussian_rejection(streams(), variance)
    assert chi_square_pvalue(gau, lambda s: dgauss_pmf(4.0, s)) > ALPHA
    assert chi_square_pvalue(gau, lambda s: dgauss_pmf(2.6**2, s)) < ALPHA


@pytest.mark.parametrize(("num", "den"), [(1, 3), (-5, 7), (10**6, 3), (7, 10**9), (0, 1)])
@pytest.mark.parametrize("bits", [64, 128, 256])
def test_exp_bounds_enclose_the_true_value_tightly(num: int, den: int, bits: int) -> None:
    with localcontext() as ctx:
        ctx.prec = 400
        truth = (-Decimal(num) / Decimal(den)).exp() * Decimal(2) ** bits
    lo, hi = exp_bounds(num, den, bits)
    assert lo <= truth <= hi
    assert hi - lo <= 4 + 2 * (int(truth) >> 60)  # tight: the fast path decides almost always


class _CountingRefine:
    def __init__(self) -> None:
        self.calls = 0
        self._real = table_samplers.refine_below

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self._real(*args, **kwargs)


def _coarse_samples() -> tuple[np.ndarray, np.ndarray]:
    """Discrete Laplace (scale 2.5) and Gaussian (sigma 2) with 4-bit fast tables."""
    scale = round_up(2.5)
    lap = table_samplers.discrete_laplace_rows(
        streams(), np.arange(N), scale.numerator, scale.denominator, coarse=4
    )
    variance = round_up(4.0)
    gau = _discrete_gaussian_table(streams(), variance.numerator, variance.denominator, 3, coarse=4)
    return lap, gau


def test_exact_refinement_keeps_the_distribution_when_the_fast_path_is_coarse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 4-bit fast tables, many decisions go through the lazy exact comparison; the output
    must still match the pmf, and a refinement that answers blindly must be caught (control)."""
    counter = _CountingRefine()
    monkeypatch.setattr(table_samplers, "refine_below", counter)
    lap, gau = _coarse_samples()
    assert counter.calls > 5000
    assert chi_square_pvalue(lap, lambda s: dlap_pmf(2.5, s)) > ALPHA
    assert chi_square_pvalue(gau, lambda s: dgauss_pmf(4.0, s)) > ALPHA
    for blind in (True, False):
        monkeypatch.setattr(table_samplers, "refine_below", lambda *a, b=blind, **k: b)
        lap, gau = _coarse_samples()
        assert chi_square_pvalue(lap, lambda s: dlap_pmf(2.5, s)) < ALPHA
        assert chi_square_pvalue(gau, lambda s: dgauss_pmf(4.0, s)) < ALPHA


def test_gaussian_acceptance_beyond_the_table_uses_the_exact_bernoulli() -> None:
    variance = round_up(9.0)
    n2, d2 = variance.numerator, variance.denominator
    gau = _discrete_gaussian_table(streams(), n2, d2, 4, size=2)  # |y| >= 2: rejection sampler
    assert chi_square_pvalue(gau, lambda s: dgauss_pmf(9.0, s)) > ALPHA
    assert chi_square_pvalue(gau, lambda s: dgauss_pmf(2.1**2, s)) < ALPHA


def test_streams_are_keyed_and_reproducible() -> None:
    key = new_key()
    a = discrete_laplace(streams(key=key), round_up(2.0))
    b = discrete_laplace(streams(key=key), round_up(2.0))
    c = discrete_laplace(streams(), round_up(2.0))
    assert np.array_equal(a, b)  # same key and identities: the same draw (safe to recompute)
    assert not np.array_equal(a, c)  # another key: independent noise


def test_a_cells_noise_does_not_depend_on_its_batch() -> None:
    key = new_key()
    ids = np.random.default_rng(3).integers(0, 2**63, size=(1000, 2), dtype=np.uint64)
    whole = discrete_gaussian(KeyedStreams(key, ids), round_up(9.0))
    order = np.random.default_rng(4).permutation(1000)
    parts = [
        discrete_gaussian(KeyedStreams(key, ids[order[i::3]]), round_up(9.0)) for i in range(3)
    ]
    rebuilt = np.empty(1000, dtype=np.int64)
    for i, part in enumerate(parts):
        rebuilt[order[i::3]] = part
    assert np.array_equal(whole, rebuilt)


def test_label_and_digest_identities() -> None:
    assert not np.array_equal(label_id("t/count"), label_id("t/sum"))
    digests = bytes(range(32)) * 2
    ids = ids_from_digests(digests, 2)
    assert ids.shape == (2, 2) and np.array_equal(ids[0], ids[1])


def test_uniform_below_is_uniform_also_for_bounds_beyond_64_bits() -> None:
    s = streams(30_000)
    rows = np.arange(len(s))
    small = uniform_below(s, rows, np.full(len(rows), 6, dtype=np.int64))
    counts = np.bincount(small, minlength=6)
    assert counts.min() > 4600 and counts.max() < 5400
    huge = np.full(len(rows), (1 << 70) + 3, dtype=object)
    big = uniform_below(s, rows, huge)
    top_bits = np.array([int(v) >> 69 for v in big])  # first bit of a 70-bit range: about half
    assert 0.47 < top_bits.mean() < 0.53


def test_bernoulli_exp_hits_its_probability() -> None:
    s = streams(50_000)
    rows = np.arange(len(s))
    for num, den in ((0, 1), (1, 2), (5, 2)):
        hits = bernoulli_exp(s, rows, np.full(len(rows), num), np.full(len(rows), den)).mean()
        p = math.exp(-num / den)
        assert abs(hits - p) < 5 * math.sqrt(p * (1 - p) / len(rows)) + 1e-12


def test_scales_are_rounded_towards_more_noise() -> None:
    exact = Rational(3) / Rational(0.7)
    s = laplace_scale(3, 0.7)
    assert exact <= s < exact * (1 + Rational(1, 2**20))
    assert round_up(1e9).denominator == 1 and round_up(1e-3) < Rational(1, 1000) * (
        1 + Rational(1, 2**20)
    )
    v = gaussian_variance(2, 0.01)
    assert v >= Rational(2) / (2 * Rational(0.01))
    with pytest.raises(ValueError, match="positive"):
        round_up(0)
