"""The fair test (issue 30): every RL arm beside four references, all from the same plateaued base.

    python -m experiments.fair --stage plateau [--splits 0 1] [--seeds 0]   # bases until the plateau rule holds
    python -m experiments.fair --stage grid                                  # each arm's lr, on validation
    python -m experiments.fair --stage table [--splits 0 1] [--seeds 0 1 2]  # Table 1 at the chosen rates

Per (partition, seed) unit, in the chosen regime (``experiments.regime.CHOSEN``) with a validation
support carved out of the held-out compositions (``VALIDATION_BUCKETS``; ``unseen`` keeps the rest
and is the test):

1. **A base at its plateau** (``PLATEAU``, fixed before any run): the regime's SFT base, then blocks
   of continued SFT at the schedule's final learning rate on fresh items of the base's own mix
   (``SFTConfig.data_offset``), until greedy accuracy on ``seen`` *and* on ``validation`` (512 items
   each, the same items every time) gains < 1 point over at least the last fifth of all updates.
   The test support never decides anything. A unit that misses it by the last block is reported
   and left out of the claim rows.
2. **Arms** from that base, 300 updates each, greedy validation / unseen curves every 50:
   ``grpo`` (RL on compounds beyond SFT) and ``grpo_atoms`` (RL on atoms); for each, its *labelled
   control* (``hlsm.control.labelled_control``: golden completions of the same prompts) and its
   *RFT control* (``hlsm.control.rft_control``: the same samples, trained only on the correct
   ones); and ``more_sft`` (the base's own mix continued for the same updates and batch size).
3. **Learning rate per arm, chosen on validation** (``--stage grid``): each arm at every rate of
   ``LRS`` (warmup ``WARMUP`` updates, then constant) on the ``GRID_UNITS``; the chosen rate
   maximizes the validation score (mean of greedy and T = 1 accuracy at the last step), averaged
   over those units; ties go to the smaller rate. The whole grid is written out.
4. **Table 1** (``--stage table``): every unit's base and arms at their chosen rates, scored on
   unseen L_train (the test compositions) and L_train + 1, + 2: greedy, T = 1 (mean over 8 samples)
   and pass@8, with each RL arm's paired difference against each of its references.

Runs are cached (``experiments.runs``) and resume after a kill; outputs are ``fair_*.{csv,json,md}``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from experiments import regime
from experiments.engine import base_config, eval_points, final_accuracy, grpo_config, parallel
from experiments.protocol import grpo_stats
from experiments.regime import RL_ARMS  # RL_ARMS: GRPO arm -> its RL support (compounds beyond SFT, atoms)
from experiments.report import figure_parser, mean_ci, output_dir, paired, pm, provenance, write_csv, write_json
from experiments.runs import minutes, posthoc_eval, run_all
from hlsm.checkpoint import read_config
from hlsm.control import labelled_control, rft_control
from hlsm.grpo import GRPOConfig
from hlsm.names import DEEPER, SEEN, UNSEEN, VALIDATION
from hlsm.sft import SFTConfig
from hlsm.text import FORMS

# Fixed before any run (issue 30); never loosened after looking.
PLATEAU = {
    "gain_max": 0.01,  # seen and validation accuracy each gain < this ...
    "window": 0.2,  # ... over at least this fraction of all updates (the last fifth)
    "n": 512,  # items per support, greedy, the same items at every check
}
LRS = (1e-5, 3e-5, 1e-4, 3e-4)  # the grid every arm is tuned on
WARMUP = 10  # updates of linear warmup before each arm's constant rate
SAMPLES = 8  # sampled completions per item at T = 1: "T = 1" accuracy is their mean, and pass@8
VALIDATION_BUCKETS = (300, 400)  # of the regime's held-out range [300, 1000); unseen (the test) keeps the rest
GRID_UNITS = ((0, 0), (1, 0))  # (partition, seed) units the learning rates are chosen on
# arm -> (kind, the GRPO arm it mirrors): grpo | rft | control (labelled) | more_sft
ARMS = {"grpo": ("grpo", "grpo"), "grpo_atoms": ("grpo", "grpo_atoms"),
        "rft": ("rft", "grpo"), "rft_atoms": ("rft", "grpo_atoms"),
        "control": ("control", "grpo"), "control_atoms": ("control", "grpo_atoms"),
        "more_sft": ("more_sft", "grpo")}
# grpo_atoms beside grpo: the paper's claim 1 (RL on compound traces beats RL on atoms)
REFERENCES = {"grpo": ("base", "more_sft", "control", "rft", "grpo_atoms"),
              "grpo_atoms": ("base", "more_sft", "control_atoms", "rft_atoms")}
# The named dynamic-sampling condition (``--dynamic``): GRPO on compounds that drops tied groups and
# refills the step (DAPO; ``GRPOConfig.dynamic_sampling``), and its two controls, which train on the
# prompts it kept (``labelled_control`` / ``rft_control`` with ``run=``): they follow a finished run,
# so they train in a second phase, following the ``grpo_dyn`` run of their unit at its chosen rate.
DYNAMIC_ARMS = {"grpo_dyn": ("grpo", "grpo"), "control_dyn": ("control", "grpo_dyn"), "rft_dyn": ("rft", "grpo_dyn")}
DYNAMIC_REFERENCES = {"grpo_dyn": ("base", "more_sft", "control_dyn", "rft_dyn")}
FOLLOWERS = ("control_dyn", "rft_dyn")

PRESETS = {
    # seconds: the pipeline on the regime's smoke sizes (what the tests run; it learns nothing)
    "tiny": dict(regime="smoke", block=20, max_blocks=2, steps=4, eval_every=2, lrs=(1e-4, 1e-3),
                 n_plateau=16, n_val=16, n_test=16, n_deeper=32),
    # the chosen regime: 3,000-update bases, blocks of 1,000 at the schedule's final rate (1e-4),
    # the paper's 300 RL steps. max_blocks was 6 until both grid bases still gained 2-10 points a block
    # at 8,000 updates (2026-12-05): the cap is a budget, not the rule, so it was raised, the rule kept
    "cpu": dict(regime="cpu", block=1000, max_blocks=12, steps=300, eval_every=50, lrs=LRS,
                n_plateau=PLATEAU["n"], n_val=256, n_test=512, n_deeper=1024),
}


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a learning rate), or a one-line error naming the value."""
    import argparse
    import math

    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number > 0")
    return x


def add_max_blocks(ap) -> None:
    """``--max-blocks``: the plateau chains' budget of blocks (default: the preset's); the rule stays."""
    from hlsm.cli import non_negative

    ap.add_argument("--max-blocks", type=non_negative, default=None,
                    help="at most this many blocks of continued SFT per plateau chain (default: the preset's; a "
                         "budget: the plateau rule itself never changes)")


def has_validation(condition: str) -> bool:
    """Whether ``condition``'s held-out range holds ``VALIDATION_BUCKETS`` (the fair test needs them)."""
    lo, hi = regime.split_spec("cpu", condition, 0)["heldout"]
    return lo <= VALIDATION_BUCKETS[0] < VALIDATION_BUCKETS[1] < hi


# the regime conditions the fair protocol runs in (``--condition``): the chosen regime and its relatives
CONDITIONS = tuple(c for c in regime.CONDITIONS if has_validation(c))


def split_spec(preset: str, partition: int, condition: str = regime.CHOSEN) -> dict:
    """The regime condition's split (default: the chosen regime's) with ``validation`` carved out of its
    held-out range."""
    spec = regime.split_spec(PRESETS[preset]["regime"], condition, partition)
    lo, hi = spec["heldout"]
    if not lo <= VALIDATION_BUCKETS[0] < VALIDATION_BUCKETS[1] < hi:
        raise ValueError(f"VALIDATION_BUCKETS {VALIDATION_BUCKETS} must lie inside the held-out range {lo, hi}")
    return dict(spec, validation=list(VALIDATION_BUCKETS), heldout=[VALIDATION_BUCKETS[1], hi])


def base(preset: str, unit: tuple, condition: str = regime.CHOSEN) -> SFTConfig:
    """The unit's SFT base: the regime condition's, on the split with a validation support."""
    p = regime.study_preset(PRESETS[preset]["regime"], condition)
    return base_config(p["sft"], split_spec(preset, unit[0], condition), unit[1])


def block(preset: str, start: SFTConfig, init: Path, offset: int) -> SFTConfig:
    """One block of continued SFT from ``init``: the base's mix on items it never read, at the base
    schedule's final rate, constant."""
    p = PRESETS[preset]
    return SFTConfig.from_dict(dict(
        start.to_dict(), init=str(init), steps=p["block"], lr=round(start.lr * start.min_lr_ratio, 12), warmup_steps=0,
        min_lr_ratio=1.0,
        data_offset=offset, eval_supports=[SEEN, VALIDATION], eval_every=0, eval_n=p["n_plateau"],
        ckpt_every=max(1, p["block"] // 4)))


def plateau_gain(checks: list[dict], window: float = PLATEAU["window"]) -> dict:
    """Each support's gain from the last check at or before (1 - window) x the updates so far to now.

    ``checks``: [{"updates": u, SEEN: acc, VALIDATION: acc}] in training order."""
    now = checks[-1]
    before = [c for c in checks[:-1] if c["updates"] <= round((1 - window) * now["updates"], 9)]
    if not before:
        return {SEEN: float("nan"), VALIDATION: float("nan")}
    ref = before[-1]
    return {k: now[k] - ref[k] for k in (SEEN, VALIDATION)}


def at_plateau(gain: dict) -> bool:
    return all(g == g and g < PLATEAU["gain_max"] for g in gain.values())


def _check(run: Path, split: dict, n: int, seed: int, first: bool) -> dict:
    """Seen and validation accuracy of one run of a chain: the base post hoc, a block from its own final
    evaluation (``block`` scores the same items: n of each, the unit's seed)."""
    if not first:
        return {k: v for k, v in final_accuracy(run).items() if k in (SEEN, VALIDATION)}
    return {r["support"]: float(r["answer"])
            for r in posthoc_eval(run, split, (SEEN, VALIDATION), n, seed, by=("all",))}


def plateau_bases(preset: str, units: list, runs: str, workers: int = 0, condition: str = regime.CHOSEN,
                  max_blocks: int | None = None) -> dict:
    """unit -> the plateau record of its base in ``condition``: its chain of run directories, the checks,
    the gains, at_plateau (``plateau_chains``)."""
    return plateau_chains(preset, {u: (condition, u) for u in units}, runs, workers, max_blocks)


def plateau_chains(preset: str, bases: dict, runs: str, workers: int = 0, max_blocks: int | None = None) -> dict:
    """key -> the plateau record of base ``bases[key] = (condition, unit)``: its chain of run directories,
    the checks, the gains, at_plateau.

    Chains train side by side (one process each): the bases, then round by round one more block for
    every base whose last check did not meet ``PLATEAU``, up to ``max_blocks`` (default: the preset's; a
    budget, never the rule: a chain cut by it is reported as not at plateau).
    """
    p = PRESETS[preset]
    cap = p["max_blocks"] if max_blocks is None else max_blocks
    cfgs = {k: base(preset, u, c) for k, (c, u) in bases.items()}
    state = {k: {"chain": [d], "configs": [cfgs[k]]} for k, d in zip(bases, run_all(
        [("sft", cfgs[k]) for k in bases], runs, workers))}
    for r in range(cap + 1):
        for k, (c, u) in bases.items():
            s = state[k]
            done = sum(cf.steps for cf in s["configs"])
            if len(s.get("checks", [])) < len(s["chain"]):
                split = split_spec(preset, u[0], c)
                s["checks"] = [{"updates": sum(cf.steps for cf in s["configs"][: i + 1]),
                                **_check(d, split, p["n_plateau"], u[1], i == 0)} for i, d in enumerate(s["chain"])]
            s["gain"] = plateau_gain(s["checks"])
            s["at_plateau"] = at_plateau(s["gain"])
            s["updates"], s["offset"] = done, sum(cf.steps * cf.batch_size for cf in s["configs"])
            last = s["checks"][-1]
            name = f"unit {u}" if c == regime.CHOSEN else f"{c} unit {u}"
            print(f"plateau: {name}: {done} updates, seen {100 * last[SEEN]:.1f} validation "
                  f"{100 * last[VALIDATION]:.1f}, gain {100 * s['gain'][SEEN]:+.1f} / "
                  f"{100 * s['gain'][VALIDATION]:+.1f} points, at plateau {s['at_plateau']}", flush=True)
        todo = [k for k in bases if not state[k]["at_plateau"]]
        if r == cap or not todo:
            break
        nxt = {k: block(preset, cfgs[k], state[k]["chain"][-1], state[k]["offset"]) for k in todo}
        for k, d in zip(todo, run_all([("sft", nxt[k]) for k in todo], runs, workers)):
            state[k]["chain"].append(d)
            state[k]["configs"].append(nxt[k])
    return state


def arm_config(preset: str, arm: str, lr: float, unit: tuple, plateau: dict,
               followed: Path | None = None, condition: str = regime.CHOSEN) -> tuple[str, object]:
    """(run kind, config) of ``arm`` at rate ``lr`` from the unit's plateau base; a follower of the
    dynamic-sampling arm (``FOLLOWERS``) takes ``followed``, the finished ``grpo_dyn`` run it follows."""
    p = PRESETS[preset]
    kind, mirrors = {**ARMS, **DYNAMIC_ARMS}[arm]
    if arm in FOLLOWERS:  # the followed run's own config, its kept prompts; the control's own rate
        g = GRPOConfig(**read_config(followed))
        if kind == "rft":
            return "grpo", dataclasses.replace(rft_control(g, run=followed), lr=lr)
        return "sft", SFTConfig.from_dict(dict(labelled_control(g, run=followed).to_dict(), lr=lr))
    rp = regime.study_preset(p["regime"], condition)
    g = grpo_config(dict(rp["grpo"], rl_support=RL_ARMS[mirrors], lr=lr, warmup_steps=WARMUP, steps=p["steps"],
                         eval_every=p["eval_every"], eval_supports=(VALIDATION, UNSEEN), eval_n=p["n_val"],
                         ckpt_every=p["eval_every"], **({"dynamic_sampling": True} if arm == "grpo_dyn" else {})),
                    unit[1])
    g.init = str(plateau["chain"][-1])
    if kind == "grpo":
        return "grpo", g
    if kind == "rft":
        return "grpo", rft_control(g)
    if kind == "control":
        return "sft", labelled_control(g)
    # more SFT: the labelled control's shape (same updates, batch, rates) on the base's own mix, fresh items
    c = labelled_control(g)
    start = plateau["configs"][0]
    return "sft", SFTConfig.from_dict(dict(c.to_dict(), train_supports=start.train_supports,
                                           data_offset=plateau["offset"]))


def curve_of(row: dict) -> dict:
    """A row's in-run curve (``curve``): a dict, or the JSON a CSV holds; {} where the row has none."""
    c = row.get("curve")
    return json.loads(c) if isinstance(c, str) and c else c if isinstance(c, dict) else {}


def curve(run: Path) -> dict:
    """step -> {support: greedy accuracy} of a run's in-run evaluations (every ``eval_every``)."""
    return {step: {k[5:]: v for k, v in m.items() if k.startswith("eval/")} for step, m in eval_points(run).items()}


def scores(run: Path, split: dict, supports: tuple, n: int, seed: int, by: tuple) -> list[dict]:
    """Greedy, T = 1 and pass@8 rows of a finished run (post hoc, cached in the run directory)."""
    return posthoc_eval(run, split, supports, n, seed, by=by, samples=SAMPLES)


def val_score(run: Path, split: dict, n: int, seed: int) -> dict:
    r = scores(run, split, (VALIDATION,), n, seed, ("all",))[0]
    g, t = float(r["answer"]), float(r["pass@1"])
    return {"val_greedy": g, "val_t1": t, "val_score": (g + t) / 2}


def train_arms(preset: str, jobs: list[tuple], plateaus: dict, runs: str, workers: int,
               followed: dict | None = None, condition: str = regime.CHOSEN) -> list[tuple[tuple, Path]]:
    """Train ``jobs`` [(unit, arm, lr)]; [(job, run directory)] of those that could run. A follower whose
    ``grpo_dyn`` run (``followed[unit]``) cannot be followed (it stopped early) is named and left out."""
    cfgs = []
    for u, arm, lr in jobs:
        try:
            cfgs.append(((u, arm, lr), arm_config(preset, arm, lr, u, plateaus[u], (followed or {}).get(u),
                                                  condition)))
        except ValueError as e:
            print(f"unit {u} {arm} at lr {lr:g}: not trained: {e}", flush=True)
    return list(zip([j for j, _ in cfgs], run_all([c for _, c in cfgs], runs, workers)))


def grid(preset: str, units, runs: str, workers: int = 0, dynamic: bool = False,
         condition: str = regime.CHOSEN, max_blocks: int | None = None, lrs=None) -> tuple[list[dict], dict, dict]:
    """(one row per unit x arm x rate, arm -> chosen rate, the units' plateau records). With ``dynamic``
    the followers' rates are chosen second, following each unit's ``grpo_dyn`` run at its chosen rate.
    ``lrs``: the rates (default: the preset's)."""
    p = dict(PRESETS[preset], lrs=tuple(lrs or PRESETS[preset]["lrs"]))
    plateaus = plateau_bases(preset, list(units), runs, workers, condition, max_blocks)
    first = [a for a in (*ARMS, *(DYNAMIC_ARMS if dynamic else ())) if a not in FOLLOWERS]
    done = train_arms(preset, [(u, a, lr) for u in units for a in first for lr in p["lrs"]], plateaus, runs, workers,
                      condition=condition)
    rows = grid_rows(preset, done, workers, condition)
    if dynamic:
        rate = choose_rates(rows, p["lrs"])["grpo_dyn"]
        followed = {u: d for (u, a, lr), d in done if a == "grpo_dyn" and lr == rate}
        jobs = [(u, a, lr) for u in followed for a in FOLLOWERS for lr in p["lrs"]]
        rows += grid_rows(preset, train_arms(preset, jobs, plateaus, runs, workers, followed, condition), workers,
                          condition)
    return rows, choose_rates(rows, p["lrs"]), plateaus


def grid_rows(preset: str, done: list[tuple[tuple, Path]], workers: int, condition: str = regime.CHOSEN) -> list[dict]:
    p = PRESETS[preset]
    vals = parallel(val_score, [(d, split_spec(preset, u[0], condition), p["n_val"], u[1]) for (u, _, _), d in done],
                    workers)
    return [{"split": u[0], "seed": u[1], "arm": arm, "lr": lr, "run": d.name, "minutes": minutes(d), **v,
             **grpo_stats(d), "curve": json.dumps(curve(d))} for ((u, arm, lr), d), v in zip(done, vals)]


def choose_rates(rows: list[dict], lrs) -> dict:
    """arm -> the rate of ``lrs`` with the highest validation score averaged over units (ties: the smaller)."""
    chosen = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mean = {lr: mean_ci([r["val_score"] for r in rows if r["arm"] == arm and r["lr"] == lr])[0] for lr in lrs}
        chosen[arm] = max(lrs, key=lambda lr: (mean[lr] if mean[lr] == mean[lr] else -1.0, -lr))
    return chosen


def unit_row(preset: str, unit: tuple, name: str, run: Path, condition: str = regime.CHOSEN) -> dict:
    """A unit's row for one run: test accuracy (greedy, T = 1, pass@8) on unseen L_train and deeper, and
    the forms its completions take there (greedy and sampled: ``hlsm.text.FORMS``)."""
    p, split = PRESETS[preset], split_spec(preset, unit[0], condition)
    depth = split["depth"]
    row = {"regime": condition, "split": unit[0], "seed": unit[1], "condition": name, "run": Path(run).name}
    got = [(f"L{depth}", r) for r in scores(run, split, (UNSEEN,), p["n_test"], unit[1], ("all",))]
    got += [(f"L{r['group']}", r) for r in scores(run, split, (DEEPER,), p["n_deeper"], unit[1], ("depth",))]
    for key, r in got:
        row.update(cells(r, key))
    return row


def cells(r: dict, key: str) -> dict:
    """A post-hoc evaluation row (``scores``) as table cells under ``key``: greedy, T = 1 and pass@8 accuracy,
    and the share of greedy / sampled completions in each form (``hlsm.text.FORMS``)."""
    return {f"greedy/{key}": float(r["answer"]), f"t1/{key}": float(r["pass@1"]),
            f"pass{SAMPLES}/{key}": float(r[f"pass@{SAMPLES}"]),
            **{f"{k}/{key}": float(v) for k, v in r.items() if k.startswith(("form/", "sampled_form/"))}}


def table(rows: list[dict], depth: int, units: str = "units at plateau") -> tuple[list[dict], str]:
    """Mean ± 95% t over ``units`` per condition, and each RL arm minus each reference (paired)."""
    keys = [f"{m}/L{d}" for m in ("greedy", "t1", f"pass{SAMPLES}") for d in (depth, depth + 1, depth + 2)]
    head = " | ".join(keys)
    lines = [f"| condition | n | {head} |", "|---|---|" + "---|" * len(keys)]
    out = []
    for cond in ("base", *ARMS, *DYNAMIC_ARMS):
        vals = [mean_ci([r.get(k) for r in rows if r["condition"] == cond]) for k in keys]
        if not vals[0][2]:
            continue
        out.append({"condition": cond, "n": vals[0][2], **{k: m for k, (m, _, _) in zip(keys, vals)},
                    **{f"{k} ci95": h for k, (_, h, _) in zip(keys, vals)}})
        lines.append(f"| `{cond}` | {vals[0][2]} | " + " | ".join(pm(m, h) for m, h, _ in vals) + " |")
    lines += ["", f"| paired difference | n | {head} |", "|---|---|" + "---|" * len(keys)]
    for arm, refs in {**REFERENCES, **DYNAMIC_REFERENCES}.items():
        for ref in refs:
            diffs = [paired(rows, arm, ref, k) for k in keys]
            if not diffs[0][2]:
                continue
            out.append({"condition": f"{arm} - {ref}", "n": diffs[0][2], **{k: m for k, (m, _, _) in zip(keys, diffs)},
                        **{f"{k} ci95": h for k, (_, h, _) in zip(keys, diffs)}})
            lines.append(f"| `{arm}` − `{ref}` | {diffs[0][2]} | " + " | ".join(pm(m, h, "+") for m, h, _ in diffs)
                         + " |")
    lines.append(f"\nAccuracy in %, mean ± 95% t-interval over {units}; greedy = greedy decoding, t1 = "
                 f"mean over {SAMPLES} samples at T = 1, pass{SAMPLES} = one of them right; L{depth} = the unseen "
                 f"(test) compositions; differences paired within units.")
    # what the sampled arms had to learn from: a null with p0 near 1 and most groups tied says little
    signal = ["", "| sampled arm | n | p0 (first-step reward, %) | reward, last 5 steps (%) | tied groups (%) |",
              "|---|---|---|---|---|"]
    for cond in (*ARMS, *DYNAMIC_ARMS):
        vals = [mean_ci([r.get(k) for r in rows if r["condition"] == cond])
                for k in ("reward_first", "reward_last", "zero_std_frac")]
        if vals[0][2]:
            signal.append(f"| `{cond}` | {vals[0][2]} | " + " | ".join(pm(m, h) for m, h, _ in vals) + " |")
    if len(signal) > 3:
        lines += signal + ["", "Tied groups: the share of groups whose G rewards are all equal (no gradient), "
                           "mean over the run's steps."]
    return out, "\n".join(lines) + "\n"


def forms_table(rows: list[dict], depth: int) -> str:
    """The forms the rollouts take (sampled completions at T = 1, ``hlsm.text.FORMS``), % per condition on
    the unseen L_train and the L_train + 1 compositions: does RL write the steps out? ('' when the rows
    predate the form columns.)"""
    keys = [f"sampled_form/{f}/L{d}" for d in (depth, depth + 1) for f in FORMS]
    if not any(k in r for r in rows for k in keys):
        return ""
    lines = ["| condition | n | " + " | ".join(f"{f} L{d}" for d in (depth, depth + 1) for f in FORMS) + " |",
             "|---|---|" + "---|" * len(keys)]
    for cond in ("base", *ARMS, *DYNAMIC_ARMS):
        vals = [mean_ci([r.get(k) for r in rows if r["condition"] == cond]) for k in keys]
        if vals[0][2]:
            lines.append(f"| `{cond}` | {vals[0][2]} | " + " | ".join(pm(m, h) for m, h, _ in vals) + " |")
    return ("\n".join(lines) + f"\n\nThe forms of the {SAMPLES} sampled completions per item at T = 1, %, mean ± "
            "95% t over the units: `explicit` writes every step's module tokens and value out, `values` every "
            "value, `chunked` hides the values inside a chunk, `answer` the answer alone, `other` none of these.\n")


COLORS = {"base": "0.55", "more_sft": "0.3", "grpo": "tab:blue", "rft": "tab:cyan", "control": "tab:green",
          "grpo_atoms": "tab:orange", "rft_atoms": "gold", "control_atoms": "tab:olive", "grpo_dyn": "tab:purple",
          "rft_dyn": "tab:pink", "control_dyn": "tab:brown"}


def plot_grid(rows: list[dict], chosen: dict, lrs, stem: Path) -> None:
    """Left: each arm's validation score by learning rate (mean over units; dots: units; ring: chosen).
    Right: each arm's greedy validation accuracy along training at its chosen rate (mean over units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        sel = [r for r in rows if r["arm"] == arm]
        means = [mean_ci([r["val_score"] for r in sel if r["lr"] == lr])[0] for lr in lrs]
        a.plot(lrs, [100 * m for m in means], marker="o", color=COLORS[arm], label=arm)
        a.scatter([r["lr"] for r in sel], [100 * r["val_score"] for r in sel], s=8, color=COLORS[arm], alpha=0.5)
        a.scatter([chosen[arm]], [100 * means[list(lrs).index(chosen[arm])]], s=140, facecolors="none",
                  edgecolors=COLORS[arm], linewidths=1.5)
        curves = [curve_of(r)
                  for r in sel if r["lr"] == chosen[arm]]
        steps = sorted({int(k) for c in curves for k in c})
        ys = [mean_ci([c.get(str(k), c.get(k, {})).get(VALIDATION) for c in curves])[0] for k in steps]
        b.plot(steps, [100 * y for y in ys], marker=".", color=COLORS[arm], label=f"{arm} (lr {chosen[arm]:g})")
    a.set_xscale("log")
    a.set_xlabel("learning rate (10 warmup updates, then constant)")
    a.set_ylabel("validation score, % ((greedy + T=1) / 2)")
    a.set_title("each arm's rate, chosen on validation (ring)", fontsize=9)
    a.legend(fontsize=9, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)  # off the data
    b.set_xlabel("updates from the plateau base")
    b.set_ylabel("greedy accuracy, validation (%)")
    b.set_title("validation curves at the chosen rates", fontsize=9)
    b.legend(fontsize=9, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    n = len({(r["split"], r["seed"]) for r in rows})
    fig.suptitle(f"Fair test, learning-rate grid: {n} units (mean; dots are units, no interval with 2)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def plot_table(summary: list[dict], depth: int, stem: Path, units: str = "units at plateau") -> None:
    """Accuracy by depth per condition (greedy and T = 1), 95% intervals, the paper's L = 4 beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.fig1 import PAPER_TABLE1
    from experiments.report import legend_below, save_figure

    conds = [s for s in summary if s["condition"] in COLORS]
    paper = {"base": PAPER_TABLE1["sft"], "grpo_atoms": PAPER_TABLE1["grpo_atoms"], "grpo": PAPER_TABLE1["grpo"]}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True)
    width = 0.8 / max(len(conds), 1)
    for ax, metric in zip(axes, ("greedy", "t1")):
        for j, s in enumerate(conds):
            xs = [i + (j - (len(conds) - 1) / 2) * width for i in range(3)]
            keys = [f"{metric}/L{d}" for d in (depth, depth + 1, depth + 2)]
            err = [100 * s[f"{k} ci95"] if s[f"{k} ci95"] == s[f"{k} ci95"] else 0 for k in keys]
            ax.bar(xs, [100 * s[k] for k in keys], width * 0.95, yerr=err, capsize=2, color=COLORS[s["condition"]],
                   label=s["condition"])
            if s["condition"] in paper:
                ax.scatter([xs[1]], [paper[s["condition"]]], marker="*", s=90, color="k", zorder=3,
                           label="paper, L = 4" if s["condition"] == "base" else None)
        ax.set_xticks(range(3), [f"unseen L={depth}", f"L={depth + 1}", f"L={depth + 2}"])
        ax.set_title("greedy decoding" if metric == "greedy" else "T = 1 (mean of 8 samples)", fontsize=9)
    axes[0].set_ylabel("accuracy, % (95% t-interval over units)")
    n = conds[0]["n"] if conds else 0
    fig.suptitle(f"Fair test, Table 1: {n} {units}" + (" (1 unit, no interval)" if n == 1 else "")
                 + "; the paper's L = 4 (stars) is a pretrained LLM's", fontsize=11)
    fig.tight_layout()
    legend_below(fig, 6)  # one legend for both panels, off the bars
    save_figure(fig, stem)
    plt.close(fig)


def curve_means(rows: list[dict], support: str) -> dict[str, list[tuple[int, float]]]:
    """condition -> [(update, mean greedy accuracy on ``support`` over units)] from the rows' in-run
    curves; update 0 is the unit's base, read from an RL arm's first check (controls check from 50)."""
    start = {}
    for r in rows:
        if "0" in curve_of(r):
            start.setdefault((r["split"], r["seed"]), curve_of(r)["0"])
    out = {}
    for cond in dict.fromkeys(r["condition"] for r in rows if r["condition"] != "base"):
        curves = [{0: start.get((r["split"], r["seed"])), **{int(k): v for k, v in curve_of(r).items()}}
                  for r in rows if r["condition"] == cond]
        steps = sorted({k for c in curves for k in c})
        out[cond] = [(k, mean_ci([(c.get(k) or {}).get(support) for c in curves])[0]) for k in steps]
    return out


def plot_curves(rows: list[dict], stem: Path, units: str = "units at plateau") -> None:
    """Greedy accuracy on validation and on unseen compositions every 50 updates of each arm (in-run
    evaluations, 256 items), mean over ``units``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import legend_below, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, support in zip(axes, (VALIDATION, UNSEEN)):
        for cond, points in curve_means(rows, support).items():
            ax.plot([k for k, _ in points], [100 * y for _, y in points], marker=".", color=COLORS.get(cond, "k"),
                    label=cond)
        ax.set_xlabel("updates from the plateau base")
        ax.set_title(f"{support} compositions (greedy, 256 items)", fontsize=9)
    axes[0].set_ylabel("greedy accuracy, % (mean over units)")
    n = len({(r["split"], r["seed"]) for r in rows})
    fig.suptitle(f"Fair test, curves: {n} {units}" + (" (1 unit)" if n == 1 else ""), fontsize=11)
    fig.tight_layout()
    legend_below(fig, 7)
    save_figure(fig, stem)
    plt.close(fig)


# the table stage's figures besides fair.png (whose provenance is fair.json) -> the numbers each draws
FIGURE_NUMBERS = {"fair_all": ["fair_summary_all.csv"], "fair_curves": ["fair.csv"]}


def figure_provenance(stem: str, numbers: list, prov: dict) -> dict:
    """The provenance of one of the table stage's figures: the files its numbers come from, the study's
    record (``fair.json``: configs, seeds, rates) and the code and machine that drew it."""
    return {"figure": stem, "numbers": numbers, "study": "fair.json", "provenance": prov}


def all_units(n_at: int, n_units: int) -> str:
    """What the table over every unit is over, in words (its title and caption)."""
    return f"units, {n_at} of {n_units} at plateau (the rest at the budget's end)"


def report_tables(rows: list[dict], n_units: int, depth: int, out: Path) -> str:
    """Table 1 over the units whose base met the plateau rule (the claim rows: ``fair_summary.csv``,
    ``fair.png``) and, when some did not, over all units as well, labelled as such (``fair_summary_all.csv``,
    ``fair_all.png``); the claim units' curves (``fair_curves.png``); returns the markdown, also written
    to ``fair_table1.md``."""
    at = [r for r in rows if r["at_plateau"]]
    n_at = len({(r["split"], r["seed"]) for r in at})
    md = "## Units whose base met the plateau rule (the claim rows)\n\n"
    summary, body = table(at, depth)
    md += body if at else "None: no base met the plateau rule within the preset's budget.\n"
    forms = forms_table(at, depth) if at else ""
    if forms:
        md += "\n### The forms of the rollouts (before RL: `base`)\n\n" + forms
    # the rates were chosen on GRID_UNITS' validation compositions; the other units never took part
    fresh = [r for r in at if (r["split"], r["seed"]) not in GRID_UNITS]
    if fresh and len(fresh) < len(at):
        md += "\n### Units the rates were not chosen on\n\n" + table(fresh, depth)[1]
    if len(at) < len(rows):  # reported, never a claim row: the bases had not stopped learning
        every = all_units(n_at, n_units)
        summary_all, body = table(rows, depth, every)
        md += f"\n## All {n_units} {every}: reported, not claim rows\n\n" + body
        forms = forms_table(rows, depth)
        if forms:
            md += "\n### The forms of the rollouts, all units\n\n" + forms
        write_csv(summary_all, out / "fair_summary_all.csv")
        plot_table(summary_all, depth, out / "fair_all", every)
    write_csv(summary, out / "fair_summary.csv")
    (out / "fair_table1.md").write_text(md)
    if summary:  # no empty figure when no unit met the rule
        plot_table(summary, depth, out / "fair")
        plot_curves(at, out / "fair_curves")
    return md


def plateau_rows(state: dict) -> list[dict]:
    return [{"split": u[0], "seed": u[1], "blocks": len(s["chain"]) - 1, "updates": s["updates"],
             "at_plateau": s["at_plateau"], "gain_seen": s["gain"][SEEN], "gain_validation": s["gain"][VALIDATION],
             "minutes": sum(minutes(d) for d in s["chain"]), "checks": json.dumps(s["checks"]),
             "base": s["chain"][-1].name} for u, s in state.items()]


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fair", __doc__, PRESETS)
    ap.add_argument("--stage", choices=("plateau", "grid", "table"), default="table",
                    help="plateau: the bases only; grid: each arm's rate on GRID_UNITS; table: Table 1 "
                         "(reads the grid's choice from --out, or runs the grid first)")
    ap.add_argument("--condition", default=regime.CHOSEN, choices=list(CONDITIONS),
                    help="the regime condition (experiments.regime.CONDITIONS; default the chosen regime); "
                         "another condition writes under <out>/<condition>/")
    add_max_blocks(ap)
    ap.add_argument("--lrs", nargs="+", type=positive_float, default=None,
                    help="the learning-rate grid (default: the preset's); recorded in fair_grid.json")
    ap.add_argument("--dynamic", action="store_true",
                    help="also the dynamic-sampling condition: grpo_dyn and its controls on the prompts it kept")
    a = ap.parse_args(argv)
    out, t0, cond = output_dir(a.out, a.preset), time.time(), a.condition
    if cond != regime.CHOSEN:  # never over the chosen regime's files
        out = out / cond
        out.mkdir(parents=True, exist_ok=True)
    units = [(sp, s) for sp in a.splits for s in a.seeds]
    lrs = tuple(sorted(set(a.lrs or PRESETS[a.preset]["lrs"])))
    meta = {"study": vars(a), "plateau_rule": PLATEAU, "lrs": lrs, "warmup": WARMUP,
            "preset": PRESETS[a.preset], "grid_units": GRID_UNITS, "validation_buckets": VALIDATION_BUCKETS,
            "provenance": provenance()}
    if a.stage == "plateau":
        state = plateau_bases(a.preset, units, a.runs, a.workers, cond, a.max_blocks)
        write_csv(plateau_rows(state), out / "fair_plateau.csv")
        for r in plateau_rows(state):
            print(f"unit {r['split']},{r['seed']}: {r['updates']} updates, at plateau {r['at_plateau']} "
                  f"(gain seen {100 * r['gain_seen']:+.1f}, validation {100 * r['gain_validation']:+.1f} points)")
        write_json({**meta, "wall_s": time.time() - t0}, out / "fair_plateau.json")
        return 0
    grid_file = out / "fair_grid.json"
    if a.stage == "table" and a.lrs and grid_file.exists() and tuple(json.loads(grid_file.read_text())["lrs"]) != lrs:
        ap.error(f"--lrs {' '.join(map(str, lrs))}: {grid_file} chose on another grid "
                 f"({json.loads(grid_file.read_text())['lrs']}): run --stage grid with these rates first")
    if a.stage == "grid" or not grid_file.exists():
        rows, chosen, state = grid(a.preset, GRID_UNITS if a.preset == "cpu" else units[:2], a.runs, a.workers,
                                   a.dynamic, cond, a.max_blocks, lrs)
        write_csv(plateau_rows(state), out / "fair_grid_plateau.csv")
        write_csv(rows, out / "fair_grid.csv")
        plot_grid(rows, chosen, lrs, out / "fair_grid")
        write_json({**meta, "chosen": chosen, "wall_s": time.time() - t0}, grid_file)
        print("chosen rates (validation):", json.dumps(chosen))
        edge = sorted(arm for arm, lr in chosen.items() if len(lrs) > 1 and lr in (lrs[0], lrs[-1]))
        if edge:  # the best rate may lie beyond the grid: say so, never widen it after looking
            print(f"chosen at an edge of the grid {list(lrs)}: {', '.join(edge)}")
        if a.stage == "grid":
            return 0
    chosen = json.loads(grid_file.read_text())["chosen"]
    arms = [*ARMS, *(DYNAMIC_ARMS if a.dynamic else ())]
    if set(arms) - set(chosen):
        ap.error(f"{grid_file} has no rate for {sorted(set(arms) - set(chosen))}: run --stage grid"
                 + (" --dynamic" if a.dynamic else ""))
    state = plateau_bases(a.preset, units, a.runs, a.workers, cond, a.max_blocks)
    done = train_arms(a.preset, [(u, arm, chosen[arm]) for u in units for arm in arms if arm not in FOLLOWERS],
                      state, a.runs, a.workers, condition=cond)
    if a.dynamic:
        followed = {u: d for (u, arm, _), d in done if arm == "grpo_dyn"}
        done += train_arms(a.preset, [(u, arm, chosen[arm]) for u in followed for arm in FOLLOWERS], state, a.runs,
                           a.workers, followed, cond)
    runs = [(u, "base", state[u]["chain"][-1]) for u in units] + [(u, arm, d) for (u, arm, _), d in done]
    rows = parallel(unit_row, [(a.preset, u, name, d, cond) for u, name, d in runs], a.workers)
    for r, (u, name, d) in zip(rows, runs):
        r.update({"at_plateau": state[u]["at_plateau"], "lr": chosen.get(name), "minutes": minutes(d),
                  **grpo_stats(d)})
        if name != "base":
            r["curve"] = json.dumps(curve(d))
    depth = split_spec(a.preset, units[0][0], cond)["depth"]
    md = report_tables(rows, len(units), depth, out)
    write_csv(plateau_rows(state), out / "fair_plateau.csv")
    write_csv(rows, out / "fair.csv")
    write_json({**meta, "chosen": chosen, "configs_of_first_unit": {
        arm: read_config(d) for (u, arm, _), d in done if u == units[0]}, "wall_s": time.time() - t0},
        out / "fair.json")
    for stem, numbers in FIGURE_NUMBERS.items():  # each figure beside the files it was drawn from
        if (out / f"{stem}.png").exists():
            write_json(figure_provenance(stem, numbers, meta["provenance"]), out / f"{stem}.json")
    print(md)
    print(f"units at plateau: {sum(s['at_plateau'] for s in state.values())} / {len(units)}; "
          f"wall {time.time() - t0:.0f} s -> {out / 'fair.csv'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
