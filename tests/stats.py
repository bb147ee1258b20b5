"""Small statistical helpers for tests: exact PMFs and goodness-of-fit at alpha = 1e-6."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

ALPHA = 1e-6


def dlap_pmf(scale: float, support: np.ndarray) -> np.ndarray:
    q = math.exp(-1 / scale)
    return (1 - q) / (1 + q) * q ** np.abs(support)


def dgauss_pmf(sigma2: float, support: np.ndarray) -> np.ndarray:
    top = int(40 * math.sqrt(sigma2)) + 10
    xs = np.arange(-top, top + 1)
    norm = np.exp(-(xs.astype(float) ** 2) / (2 * sigma2)).sum()
    return np.exp(-(support.astype(float) ** 2) / (2 * sigma2)) / norm


def chi_square_pvalue(sample: np.ndarray, pmf) -> float:  # type: ignore[no-untyped-def]
    """Chi-square test of integer ``sample`` against ``pmf`` (callable on a support array).

    Bins with expected count >= 5 are kept; the two tails are pooled into one bin each.
    """
    n = len(sample)
    lo, hi = int(sample.min()), int(sample.max())
    span = max(abs(lo), abs(hi)) + 1
    support = np.arange(-span, span + 1)
    expected = pmf(support) * n
    keep = expected >= 5
    kept = support[keep]
    a, b = kept.min(), kept.max()
    observed = (
        [np.sum(sample < a)] + [np.sum(sample == v) for v in range(a, b + 1)] + [np.sum(sample > b)]
    )
    exp_mid = pmf(np.arange(a, b + 1)) * n
    exp_lo = (1 - pmf(np.arange(a, b + 1)).sum()) / 2 * n  # symmetric distributions
    expected_bins = np.concatenate([[exp_lo], exp_mid, [exp_lo]])
    observed_arr = np.asarray(observed, dtype=float)
    mask = expected_bins > 0
    chi2 = float(((observed_arr[mask] - expected_bins[mask]) ** 2 / expected_bins[mask]).sum())
    return float(stats.chi2.sf(chi2, mask.sum() - 1))


def variance_z(sample: np.ndarray, true_variance: float, kurtosis: float) -> float:
    """z-score of the sample variance against ``true_variance`` (relative sd sqrt((k-1)/n))."""
    n = len(sample)
    rel = math.sqrt((kurtosis - 1) / n)
    return (float(np.var(sample.astype(float))) / true_variance - 1) / rel


def z_critical(alpha: float = ALPHA) -> float:
    return float(stats.norm.isf(alpha / 2))
