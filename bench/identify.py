"""Identification check wall time: the full 24 x 10 inventory at depth 3, against naive all-sympy.

    python bench/identify.py [--sizes 1000 3000 10000] [--naive-sizes 200 1000] [--repeats 3]

Supports are ``Support(depths=(3,)).sample_compositions(n)`` over all 24 skills and 10 routings
(what a split's SFT or RL stream holds). Measured per size (best of ``repeats``, warm imports):
``identify`` with tied units and with positional units (exact rank, certificates, null vectors,
interfaces, graph components), and the reachability of 1000 unseen depth-3 targets.

Baseline: what a theorist would write first — the incidence matrices as sympy Matrices, and for
every unit ``rank(A) - rank(A without its column) == 1``, all in sympy on the full matrix. It is
timed on smaller supports (it grows linearly with rows and is minutes at 10000), next to ours at
the same size; the two must agree unit by unit, which the script checks. A numpy float
``matrix_rank`` version of the same test is printed for scale (fast, but not exact).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter

import numpy as np

import hlsm
from hlsm.identify import identify


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def incidence(comps, kind: int):
    rows = [Counter(step[kind] for step in c) for c in comps]
    units = sorted({u for r in rows for u in r})
    return units, [[r[u] for u in units] for r in rows]


def naive_sympy(comps) -> set[str]:
    import sympy

    out = set()
    for kind in (0, 1):
        units, rows = incidence(comps, kind)
        M = sympy.Matrix(rows)
        rank = M.rank()
        for j, u in enumerate(units):
            M2 = M.copy()
            M2.col_del(j)
            if rank - M2.rank() == 1:
                out.add(u)
    return out


def naive_float(comps) -> set[str]:
    out = set()
    for kind in (0, 1):
        units, rows = incidence(comps, kind)
        M = np.array(rows, dtype=float)
        rank = np.linalg.matrix_rank(M)
        out |= {u for j, u in enumerate(units) if rank - np.linalg.matrix_rank(np.delete(M, j, 1)) == 1}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--naive-sizes", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} cores, python {platform.python_version()}")
    support = hlsm.Support(depths=(3,))
    targets = hlsm.Support(depths=(3,), buckets=(900, 1000)).sample_compositions(1000, seed=7)
    identify(support.sample_compositions(100))  # warm imports (sympy, networkx)

    head = "support (24 skills x 10 routings, L=3)"
    print(f"{head:40s} {'tied':>9s} {'positional':>11s} {'reach 1000':>11s}")
    for n in args.sizes:
        comps = support.sample_compositions(n, seed=1)
        t_tied, ident = best(lambda c=comps: identify(c), args.repeats)
        t_pos, _ = best(lambda c=comps: identify(c, positional=True), args.repeats)
        t_reach, reached = best(lambda i=ident: [i.reach(c) for c in targets], args.repeats)
        print(f"{f'{n} compositions':40s} {t_tied:8.3f}s {t_pos:10.3f}s {t_reach:10.3f}s"
              f"   (rank {ident.rank['routing']}+{ident.rank['skill']}, "
              f"{sum(r.reachable for r in reached)}/1000 reachable)")

    head = "baseline, tied units"
    print(f"\n{head:40s} {'ours':>9s} {'naive sympy':>11s} {'ratio':>8s} {'numpy float':>11s}")
    for n in args.naive_sizes:
        comps = support.sample_compositions(n, seed=1)
        t_ours, ident = best(lambda c=comps: identify(c), args.repeats)
        t_naive, naive = best(lambda c=comps: naive_sympy(c), 1)
        t_float, flt = best(lambda c=comps: naive_float(c), args.repeats)
        assert naive == set(ident.identified) == flt, "identification disagrees with the naive check"
        print(f"{f'{n} compositions':40s} {t_ours:8.3f}s {t_naive:10.2f}s {t_naive / t_ours:7.0f}x"
              f" {t_float:10.3f}s")


if __name__ == "__main__":
    main()
