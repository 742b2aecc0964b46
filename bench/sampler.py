"""Sampler throughput: HLSM examples/s at depth 3 and 6 against reasoning-gym, measured in one run.

    python bench/sampler.py [--n 200000] [--repeats 3]

The baseline is what a user would otherwise reach for: reasoning-gym's string-manipulation
generators (``string_manipulation``: a string rewritten by a chain of rules, the closest in kind;
``caesar_cipher`` and ``spell_backward``, single string operations). Install it only for the
benchmark, e.g. in its own venv: ``pip install reasoning-gym`` (then run this with
PYTHONPATH pointing at the repo). Both sides produce full items. Ours are measured two ways: ``HLSM.sample``
(``Example`` objects with prompt, completion, answer, per-step selections and spans) and
``HLSM.sample_batch(...).tokens(...)`` (the same items as padded token ids with prompt lengths and
per-step token spans, what a trainer consumes); theirs are question/answer dicts.
Rates are best-of-``repeats``; "2 procs" runs two processes on disjoint index ranges (as two
data-loader workers or two DDP ranks would) and counts items per wall-clock second.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import hlsm


def hlsm_rate(depth: int, n: int, start: int = 0) -> float:
    gen = hlsm.HLSM(depth=depth, seed=0)
    t = time.perf_counter()
    items = gen.sample(n, start=start)
    dt = time.perf_counter() - t
    assert len(items) == n and items[-1].answer == items[-1].steps[-1].value
    return n / dt


def hlsm_token_rate(depth: int, n: int, start: int = 0) -> float:
    """Columnar path: the same items executed with numpy and rendered to padded token ids."""
    gen, tok = hlsm.HLSM(depth=depth, seed=0), hlsm.Tokenizer()
    t = time.perf_counter()
    ids, prompt_len, length, spans = gen.sample_batch(n, start=start).tokens(tok)
    dt = time.perf_counter() - t
    assert ids.shape[0] == n and (length > prompt_len).all()
    return n / dt


def rg_rate(name: str, n: int, start: int = 0) -> float:
    import reasoning_gym

    ds = reasoning_gym.create_dataset(name, size=start + n, seed=0)
    t = time.perf_counter()
    items = [ds[i] for i in range(start, start + n)]
    dt = time.perf_counter() - t
    assert items[-1]["question"] and items[-1]["answer"] is not None
    return n / dt


def _worker(args):
    fn, a, n, start = args
    t = time.perf_counter()
    fn(a, n, start)
    return time.perf_counter() - t


def parallel_rate(fn, a, n: int, procs: int) -> float:
    """Items per wall-clock second with ``procs`` processes on disjoint index ranges."""
    per = n // procs
    ctx = mp.get_context("fork")
    with ctx.Pool(procs) as pool:
        t = time.perf_counter()
        pool.map(_worker, [(fn, a, per, k * per) for k in range(procs)])
        return per * procs / (time.perf_counter() - t)


def measure(fn, arg, n: int, procs: int, repeats: int) -> float:
    """Best-of-``repeats`` items/s of ``fn(arg, n)`` in one process or ``procs`` processes."""
    if procs == 1:
        return max(fn(arg, n) for _ in range(repeats))
    return max(parallel_rate(fn, arg, n, procs) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="HLSM items per measurement")
    ap.add_argument("--n-baseline", type=int, default=20_000, help="reasoning-gym items per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {os.cpu_count()} cores, python {platform.python_version()}")
    rows = []
    for procs in (1, 2):
        for label, fn in (("Example objects", hlsm_rate), ("token arrays", hlsm_token_rate)):
            for depth in (3, 6):
                rate = measure(fn, depth, args.n, procs, args.repeats)
                rows.append((f"hlsm depth {depth}, {label}", procs, rate))
        try:
            for name in ("string_manipulation", "caesar_cipher", "spell_backward"):
                rate = measure(rg_rate, name, args.n_baseline, procs, args.repeats)
                rows.append((f"reasoning-gym {name}", procs, rate))
        except ImportError:
            print("# reasoning-gym is not installed: `pip install reasoning-gym` to measure the baseline")
    print(f"{'generator':44s} {'procs':>5s} {'items/s':>12s}")
    for name, procs, rate in rows:
        print(f"{name:44s} {procs:5d} {rate:12,.0f}")
    base = {procs: rate for name, procs, rate in rows if name == "reasoning-gym string_manipulation"}
    for name, procs, rate in rows:
        if name.startswith("hlsm") and procs in base:
            ratio = rate / base[procs]
            print(f"ratio {name} / reasoning-gym string_manipulation ({procs} proc): {ratio:.1f}x")


if __name__ == "__main__":
    main()
