"""Exact sampler speed next to OpenDP's exact samplers, in one process (not a test).

CPU seconds per 10^6 draws (``time.process_time``, best of ``--repeats``) for discrete Laplace
and discrete Gaussian at several scales, from dprelease's keyed samplers and from OpenDP's
``make_laplace`` / ``make_gaussian`` on integers (``pip install '.[bench]'``). Prints a table with
the ratio OpenDP / dprelease.

    python benchmarks/bench_samplers.py --draws 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_file import print_table, save_results  # noqa: E402
from dp_ops import table_samplers  # noqa: E402
from dp_ops.keyed_stream import KeyedStreams, new_key  # noqa: E402
from dp_ops.rational import round_up  # noqa: E402
from dp_ops.samplers import discrete_gaussian, discrete_laplace  # noqa: E402


def cpu_best(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def ours(kind: str, scale: float, n: int) -> Callable[[], object]:
    """A fresh key and cold sampler tables each time: table construction is part of the cost."""
    ids = np.random.default_rng(0).integers(0, 2**63, size=(n, 2), dtype=np.uint64)

    def run() -> object:
        table_samplers.geometric_ladder.cache_clear()
        table_samplers.acceptance_table.cache_clear()
        if kind == "laplace":
            return discrete_laplace(KeyedStreams(new_key(), ids), round_up(scale))
        return discrete_gaussian(KeyedStreams(new_key(), ids), round_up(scale * scale))

    return run


def opendp(kind: str, scale: float, n: int) -> Callable[[], object] | None:
    try:
        import opendp.prelude as dp
    except ImportError:
        return None
    dp.enable_features("contrib")
    domain = dp.vector_domain(dp.atom_domain(T=int))
    if kind == "laplace":
        m = dp.m.make_laplace(domain, dp.l1_distance(T=int), scale)
    else:
        m = dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale)
    zeros = [0] * n
    return lambda: m(zeros)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    per_million = 1_000_000 / args.draws
    rows = []
    for kind, scales in (("laplace", (1.0, 10.0, 1000.0)), ("gaussian", (1.0, 10.0, 1000.0))):
        for scale in scales:
            t_ours = cpu_best(args.repeats, ours(kind, scale, args.draws)) * per_million
            theirs = opendp(kind, scale, args.draws)
            t_opendp = cpu_best(args.repeats, theirs) * per_million if theirs else None
            row = {
                "sampler": f"discrete {kind}",
                "scale": scale,
                "dprelease_cpu_s_per_1M": round(t_ours, 2),
                "opendp_cpu_s_per_1M": round(t_opendp, 2) if t_opendp else None,
                "speedup": round(t_opendp / t_ours, 1) if t_opendp else None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print_table(
        rows,
        [
            ("sampler", "sampler", "<18"),
            ("scale", "scale", ">7"),
            ("dprelease s/1M", "dprelease_cpu_s_per_1M", ">15"),
            ("OpenDP s/1M", "opendp_cpu_s_per_1M", ">12"),
            ("speedup", "speedup", ">8"),
        ],
    )
    save_results("samplers", rows)


if __name__ == "__main__":
    main()
