"""Wall time of one study unit, split by phase, for the baseline and for speed levers in one run.

    python bench/unit.py [--preset smoke|cpu] [--split 0] [--seed 0] [--scale 1] [--levers threads2 compile ...]

One unit is what the regime study trains per (partition, seed) in the chosen regime
(``experiments.regime.unit_plan(preset, CHOSEN, split, seed, rl=True)``): the SFT base, GRPO on
the RL compositions and on atoms, each GRPO run's labelled control, then the post-hoc deeper
evaluation every figure adds. Everything trains one job after another in this process, from an
empty cache (a temporary directory), with ``--threads`` torch threads (1: what each of a study's
parallel workers gets). Wall time is split into phases: ``sft`` (the base's training), ``grpo``
and ``control`` (training), ``eval`` (every ``hlsm.evaluate.evaluate`` call inside those runs:
greedy decoding of the eval supports) and ``posthoc`` (the deeper evaluation).

The baseline unit runs first, then each lever's unit with the same seed; each lever prints its
per-phase ratio (baseline time / lever time: > 1 is faster) and whether its final accuracies are
identical to the baseline's (a lever that changes results must show they stay within the
seed-to-seed spread before it is kept). Levers (``LEVERS``): torch threads, ``torch.compile`` of
SFT, fewer eval items, the SFT micro-batch size (rows are sorted by length and each micro-batch
cut to its longest row, so smaller ones carry less padding) and ``procs2``: two processes of one
thread each train the unit at the same time, as a study's two workers do; its phases are one
process's and its ``throughput`` line is the baseline's total over half the pair's wall time
(units per second, relative to one process alone).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

LEVERS = {  # name -> (torch threads or None, processes, SFT overrides, GRPO/control overrides)
    "threads2": (2, 1, {}, {}),  # 1 process x 2 threads instead of 1 x 1
    "procs2": (1, 2, {}, {}),  # 2 processes x 1 thread, each training the same unit (what a study runs)
    "compile": (None, 1, {"compile": True}, {}),  # torch.compile the SFT model (off on CPU by default)
    "eval_half": (None, 1, {"eval_n": 0.5}, {"eval_n": 0.5}),  # half the eval items (wider intervals)
    "micro16": (None, 1, {"micro_batch_size": 16}, {}),  # SFT micro-batches of 16 rows: less padding, more calls
    "micro64": (None, 1, {"micro_batch_size": 64}, {}),  # one SFT micro-batch per update: fewer calls, more padding
}
PHASES = ("sft", "grpo", "control", "eval", "posthoc")


def _scaled(cfg, over: dict) -> None:
    """Apply ``over`` to a config in place; a float for an int field is a multiplier."""
    for k, v in over.items():
        old = getattr(cfg, k)
        setattr(cfg, k, max(1, round(old * v)) if isinstance(old, int) and isinstance(v, float) else v)


def run_unit(preset: str, split: int, seed: int, threads: int, sft_over: dict, rl_over: dict,
             scale: float = 1.0) -> dict:
    """Train one unit from an empty cache (``scale``: a multiplier of every run's updates, with its
    eval and checkpoint periods); returns {phase: seconds, "accuracy": {run: {support: acc}}}."""
    import torch

    import hlsm.evaluate
    from experiments import engine, regime
    from hlsm.control import labelled_control

    torch.set_num_threads(threads)
    plan = regime.unit_plan(preset, regime.CHOSEN, split, seed, rl=True)
    # fewer updates, with the eval / checkpoint / warmup periods in proportion (a 0, "never", stays 0)
    shorter = lambda cfg: {k: float(scale) for k in ("steps", "eval_every", "ckpt_every", "warmup_steps")
                           if scale != 1 and getattr(cfg, k)}
    _scaled(plan["sft"][1], {**shorter(plan["sft"][1]), **sft_over})
    for kind, cfg in plan.values():
        if kind == "grpo":
            _scaled(cfg, {**shorter(cfg), **rl_over})
    for name, (kind, _) in plan.items():  # a control mirrors its (possibly changed) GRPO run
        if kind == "control":
            plan[name] = ("control", labelled_control(plan[name.replace("control", "grpo")][1], plan["sft"][1]))
            _scaled(plan[name][1], {k: v for k, v in rl_over.items() if k == "eval_n"})
    times = dict.fromkeys(PHASES, 0.0)
    real = hlsm.evaluate.evaluate

    def timed(*a, **k):  # the trainers import evaluate at call time, so this wrapper is what they call
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            times["eval"] += time.perf_counter() - t

    hlsm.evaluate.evaluate = timed
    try:
        with tempfile.TemporaryDirectory() as root:
            dirs = {}
            for name, (kind, cfg) in plan.items():  # the base first (dict order), then its continuations
                if kind != "sft":
                    cfg.init = str(dirs["sft"])
                before, t = times["eval"], time.perf_counter()
                dirs[name] = engine.run_all([("grpo" if kind == "grpo" else "sft", cfg)], root, 1, False)[0]
                times[kind] += time.perf_counter() - t - (times["eval"] - before)
            spec = engine.deeper_split(regime.split_spec(preset, regime.CHOSEN, split))
            n = regime.study_preset(preset, regime.CHOSEN)["n_deeper"]
            before, t = times["eval"], time.perf_counter()
            deeper = {name: engine.deeper_accuracy(d, spec, n, seed) for name, d in dirs.items()}
            times["posthoc"] = time.perf_counter() - t  # all decoding: not also counted in eval
            times["eval"] = before
            acc = {name: {**engine.final_accuracy(d), **{f"L{k}": v for k, v in deeper[name].items()}}
                   for name, d in dirs.items()}
    finally:
        hlsm.evaluate.evaluate = real
    return {**times, "total": sum(times[p] for p in PHASES), "accuracy": acc}


def report(name: str, r: dict, base: dict | None = None) -> None:
    line = f"{name:>10}: " + "  ".join(f"{p} {r[p]:7.1f} s" for p in (*PHASES, "total"))
    print(line)
    if base is not None:
        ratios = "  ".join(f"{p} {base[p] / r[p]:5.2f}x" if r[p] > 0 else f"{p}   n/a" for p in (*PHASES, "total"))
        same = r["accuracy"] == base["accuracy"]
        print(f"{'':>10}  baseline / lever: {ratios}  | final accuracies identical: {same}")
        if not same:
            for run, acc in r["accuracy"].items():
                diff = {k: round(100 * (v - base["accuracy"][run][k]), 1) for k, v in acc.items()
                        if k in base["accuracy"][run]}
                print(f"{'':>12}{run}: lever − baseline (points) {diff}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu", choices=["smoke", "cpu"], help="experiments.regime preset")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the baseline (a study worker's: 1)")
    ap.add_argument("--levers", nargs="*", default=[], choices=list(LEVERS))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplier of every run's updates (e.g. 0.25 for a quick lever screen; fixed costs such "
                         "as compiling then weigh more)")
    a = ap.parse_args(argv)
    if not 0 < a.scale <= 1:
        ap.error(f"--scale must be in (0, 1], got {a.scale}")
    import torch

    print(f"# bench/unit.py --preset {a.preset}: one unit of {a.preset} in the chosen regime, split {a.split}, "
          f"seed {a.seed}, updates x{a.scale}; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores")
    t0 = time.time()
    base = run_unit(a.preset, a.split, a.seed, a.threads, {}, {}, a.scale)
    report("baseline", base)
    for name in a.levers:
        threads, procs, sft_over, rl_over = LEVERS[name]
        args = (a.preset, a.split, a.seed, threads or a.threads, sft_over, rl_over, a.scale)
        if procs == 1:
            report(name, run_unit(*args), base)
            continue
        t = time.perf_counter()
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = [f.result() for f in [pool.submit(run_unit, *args) for _ in range(procs)]]
        wall = time.perf_counter() - t
        report(name, runs[0], base)
        print(f"{'':>10}  {procs} processes: wall {wall:.1f} s for {procs} units, throughput "
              f"{base['total'] * procs / wall:.2f}x one process alone; all {procs} runs identical: "
              f"{all(r['accuracy'] == runs[0]['accuracy'] for r in runs)}")
    print(f"wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
