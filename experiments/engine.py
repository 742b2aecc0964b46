"""The study engine every study and figure uses: per (split, seed) unit, SFT bases, then runs from them.

    plans = {unit: {name: (kind, cfg)}}        # kind: "sft" (a base) | "grpo" | "control"
    dirs = train_units(plans, base_of, "runs")  # {(unit, name): run directory}

Phase 1 trains (or re-uses) every base; phase 2 sets each continuation's ``init`` to its base's run
directory (``base_of(name)`` names the base) and trains those. Controls are continued SFT
(``hlsm.control.labelled_control`` of their GRPO run), so they run as SFT jobs. Runs are cached and
resumable (``experiments.runs``); independent jobs of a phase share a process pool.
"""

from __future__ import annotations

from pathlib import Path

from experiments.runs import posthoc_eval, run_all
from hlsm.grpo import GRPOConfig
from hlsm.names import DEEPER, EVAL_ATOMS, RL_PROMPTS, SEEN, UNSEEN
from hlsm.sft import SFTConfig

KINDS = ("sft", "grpo", "control")
BASE_EVALS = (SEEN, UNSEEN, RL_PROMPTS, EVAL_ATOMS)  # what a base is scored on, at every fifth of its updates
GRPO_EVALS = (SEEN, RL_PROMPTS, UNSEEN)  # what a continuation is scored on at its end (deeper: post hoc)


def base_config(sft: dict, split: dict, seed: int) -> SFTConfig:
    """A unit's SFT base: ``sft`` (SFTConfig fields) on ``split``; unless ``sft`` says otherwise,
    scored on ``BASE_EVALS`` and checkpointed at every fifth of its updates, so the plateau rule of
    ``experiments.regime`` can be read from its log."""
    every = max(1, sft["steps"] // 5)
    return SFTConfig(**{"eval_supports": BASE_EVALS, "eval_every": every, "ckpt_every": every, "device": "auto",
                        **sft}, split=split, seed=seed)


def grpo_config(grpo: dict, seed: int) -> GRPOConfig:
    """A unit's GRPO continuation (``init`` is set by ``train_units``); unless ``grpo`` says otherwise,
    scored on ``GRPO_EVALS`` at its end, checkpointed every quarter, logged every step."""
    return GRPOConfig(**{"eval_supports": GRPO_EVALS, "eval_every": 0, "ckpt_every": max(1, grpo["steps"] // 4),
                         "log_every": 1, **grpo}, seed=seed)


def train_units(plans: dict, base_of, runs="runs", workers: int = 0, progress: bool = True) -> dict:
    """Train every job of ``plans`` ({unit: {name: (kind, config)}}); returns {(unit, name): Path}."""
    for unit, jobs in plans.items():
        for name, (kind, _) in jobs.items():
            if kind not in KINDS:
                raise ValueError(f"unit {unit} job {name!r}: kind must be one of {KINDS}, got {kind!r}")
    bases = sorted((u, n) for u, jobs in plans.items() for n, (kind, _) in jobs.items() if kind == "sft")
    dirs: dict = dict(zip(bases, run_all([("sft", plans[u][n][1]) for u, n in bases], runs, workers, progress)))
    later = [(u, n) for u, jobs in plans.items() for n, (kind, _) in jobs.items() if kind != "sft"]
    for u, n in later:
        plans[u][n][1].init = str(dirs[(u, base_of(n))])
    kinds = ["grpo" if plans[u][n][0] == "grpo" else "sft" for u, n in later]
    dirs.update(zip(later, run_all([(k, plans[u][n][1]) for k, (u, n) in zip(kinds, later)], runs, workers,
                                   progress)))
    return dirs


def final_accuracy(run: Path) -> dict[str, float]:
    """support -> greedy exact-answer accuracy of a finished run (its eval.csv)."""
    from hlsm.evaluate import read_csv

    return {r["support"]: r["answer"] for r in read_csv(Path(run) / "eval.csv") if r["by"] == "all"}


def eval_points(run: Path) -> dict[int, dict]:
    """step -> the metrics record holding a run's in-run evaluation at that step (``eval/<support>`` keys)."""
    from hlsm.checkpoint import read_metrics

    return {m["step"]: m for m in read_metrics(run) if any(k.startswith("eval/") for k in m)}


def deeper_accuracy(run: Path, split: dict, n: int, seed: int) -> dict[int, float]:
    """depth -> greedy accuracy of a finished run on ``n`` items of ``split``'s ``deeper`` support (post
    hoc, cached in the run directory, so every study and figure reads the same numbers)."""
    return {int(r["group"]): float(r["answer"]) for r in posthoc_eval(run, split, (DEEPER,), n, seed, by=("depth",))}


def posthoc_accuracy(run: Path, split: dict, supports: tuple[str, ...], n: int, seed: int) -> dict[str, float]:
    """support -> greedy accuracy of a finished run on ``n`` items of each of ``split``'s ``supports``
    (post hoc and cached, as ``deeper_accuracy``)."""
    return {r["support"]: float(r["answer"]) for r in posthoc_eval(run, split, tuple(supports), n, seed, by=("all",))}


def deeper_split(spec: dict) -> dict:
    """``spec`` with its deeper support at L_train + 1 and + 2 (what every figure scores as deeper)."""
    return dict(spec, deeper=[spec["depth"] + 1, spec["depth"] + 2])


def parallel(fn, jobs: list[tuple], workers: int = 0) -> list:
    """``[fn(*job) for job in jobs]`` on the study's launcher (``experiments.launch``: a pool of ``workers``
    processes, 0 = one per core, or Ray tasks); ``fn`` must be importable (a module-level function) and
    set its own torch threads (``posthoc_eval`` takes one). A job that fails is named after the others
    finish (``RunsFailed``)."""
    from experiments.launch import map_jobs, raise_failures

    return raise_failures(map_jobs(fn, jobs, workers), "evaluations")
