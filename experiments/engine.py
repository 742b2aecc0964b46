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

from experiments.runs import run_all

KINDS = ("sft", "grpo", "control")


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
