"""The RL protocol study: which SFT / GRPO settings make held-out gains real, against the labelled control.

    python -m experiments.protocol [--preset tiny|smoke|cpu|...] [--seeds 0 1 2] [--splits 0 1] [--tier core|all]

For every (composition split, seed) unit it trains SFT bases, then from each base GRPO variants
and the control every claim must beat: *continued SFT with labels on exactly the RL prompts*
(same prompts in the same order, same number of updates, same learning rate; one label per prompt
instead of G scored samples; ``hlsm.control.labelled_control``), one control per RL support and
replay setting (``CONTROL_OF``). Every run is scored on the same evaluation items (same eval seed): ``seen``
(SFT compositions, fresh inputs: forgetting), ``rl_prompts`` (the RL compositions, fresh inputs),
``unseen`` (held-out compositions no training stream ever shows: the transfer question) and
``deeper`` (L_train + 1). Units differ in the composition partition (``partition_seed``: which
compositions are SFT / RL / held out) and in the seed (init, data order, sampling).

Writes ``protocol.csv`` (one row per unit x condition x support), ``protocol_summary.csv`` (mean
and 95% t-interval over units of the accuracy and of the paired difference to the control and to
the SFT base), ``protocol.png/.pdf`` and ``protocol.json`` (configs, units, provenance, wall time).
Runs are cached under ``--runs`` by config hash and resume after a kill.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments import regime
from experiments.engine import (
    base_config,
    deeper_accuracy,
    deeper_split,
    final_accuracy,
    grpo_config,
    parallel,
    posthoc_accuracy,
    train_units,
)
from experiments.report import (
    figure_parser,
    interval_note,
    mean_ci,
    output_dir,
    panel_grid,
    pm,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from hlsm.checkpoint import read_metrics
from hlsm.control import labelled_control
from hlsm.names import DEEPER, RL_ATOMS, RL_INSIDE, RL_PROMPTS, SEEN, SFT_MISSING, UNSEEN
from hlsm.support import DEFAULT_SPLIT

SUPPORTS = (SEEN, RL_PROMPTS, UNSEEN, DEEPER)

# Per preset: the task (split), the model and SFT budget, and the GRPO budget every RL condition
# shares. ``cpu`` (and ``tiny``) are the regime the regime study chose (``experiments.regime.CHOSEN``,
# docs/regime.md), so the cpu core runs are that study's runs; ``*_chain_l2`` keep the first regime
# by name: the prototype of docs/design.md §prototype (8 length-preserving skills chained at
# L_train = 2, 64 compositions, ``values`` traces, learned positions) with ~35% of compositions held out.
STUDY_SPLIT = dict(DEFAULT_SPLIT, sft=[0, 450], rl=[450, 650], heldout=[650, 1000])
PRESETS = {
    # seconds: a pipeline check in the chosen regime (what the tests run; it learns nothing yet)
    "tiny": regime.study_preset("smoke", regime.CHOSEN),
    # a few minutes on one core that visibly learn: the first regime's easy task at the trainers' smoke
    # sizes (hlsm.sft / hlsm.grpo --preset smoke: seen ~0.9, GRPO reward above 0 and rising)
    "smoke": dict(sft=dict(preset="smoke", steps=2000, batch_size=32, lr=3e-3, warmup_steps=20, eval_n=64),
                  grpo=dict(steps=60, prompts_per_step=16, group_size=8, lr=1e-4, eval_n=64, max_new_tokens=24),
                  split=dict(DEFAULT_SPLIT, sft=[0, 450], rl=[450, 650], heldout=[650, 1000]), n_deeper=64),
    "cpu": regime.study_preset("cpu", regime.CHOSEN),
    "smoke_chain_l2": dict(sft=dict(preset="smoke", steps=60, batch_size=16, lr=3e-3, warmup_steps=10, eval_n=32),
                           grpo=dict(steps=4, prompts_per_step=4, group_size=4, lr=3e-4, eval_n=32,
                                     max_new_tokens=24),
                           split=dict(STUDY_SPLIT, skills=STUDY_SPLIT["skills"][:4]), n_deeper=32),
    "cpu_chain_l2": dict(sft=dict(preset="cpu", steps=3000, batch_size=64, micro_batch_size=32, lr=1e-3,
                                  warmup_steps=100, eval_n=256),
                         grpo=dict(steps=100, prompts_per_step=16, group_size=8, lr=1e-4, eval_n=256,
                                   max_new_tokens=32),
                         split=STUDY_SPLIT, n_deeper=256),
}


def sft_missing_split(split: dict) -> dict:
    """The split overrides of the ``sft_missing`` base: a quarter of the split's skills (at least one),
    drawn with its partition seed, that SFT never shows (the paper removes 4 of its 24 skills; a quarter
    of 8 leaves about half of the unseen L = 3 compositions using one, so both halves are measured)."""
    skills = list(split["skills"])
    return {"sft_missing": sorted(random.Random(split["partition_seed"]).sample(skills, max(1, len(skills) // 4)))}


# SFT bases: the preset's SFT and the sharpness / position-encoding variants. A base's "split" entry
# is a function of the unit's split spec giving overrides of it.
BASES = {
    "sft": {},
    "sft_short": {"steps": 1 / 3},  # early stopped: a third of the updates (a softer policy)
    "sft_ls": {"label_smoothing": 0.1},
    "sft_rope": {"model": {"pos": "rope"}},
    "sft_nopos": {"model": {"pos": "none"}},
    # Finding 4 (bottom): the two arms get equal budgets, half the main base's (for compute)
    # atoms only inside compositions (where the split's sft support also holds depth-1 traces, as the
    # chosen regime's sft_depths (1, 2, 3) does, the few atoms among them remain)
    "sft_compounds": {"train_supports": {"sft": 1.0}, "steps": 0.5},
    "sft_atoms": {"train_supports": {"atoms": 1.0}, "steps": 0.5},  # atoms only as L = 1 traces
    # the compound-trace SFT of sft_compounds that never shows a quarter of the skills (sft_missing_split)
    "sft_missing": {"train_supports": {SFT_MISSING: 1.0}, "steps": 0.5, "split": sft_missing_split},
}

VARIANT_BASES = ("sft_short", "sft_ls", "sft_rope", "sft_nopos", "sft_compounds", "sft_atoms", "sft_missing")
# name -> (base, kind, GRPO overrides (kind grpo) or the GRPO condition it mirrors (kind control), tier).
# kind: base | grpo | control. A control is ``hlsm.control.labelled_control`` of its GRPO condition:
# continued SFT on exactly the prompts (and replay items) that GRPO run samples, in the same order.
CONDITIONS = {
    "sft": ("sft", "base", {}, "core"),
    "control": ("sft", "control", "grpo", "core"),
    "grpo": ("sft", "grpo", {}, "core"),
    "grpo_kl": ("sft", "grpo", {"beta": 0.05}, "core"),
    "grpo_replay": ("sft", "grpo", {"replay_fraction": 0.5}, "core"),
    "control_replay": ("sft", "control", "grpo_replay", "core"),
    "grpo_structure": ("sft", "grpo", {"rewards": {"answer": 0.5, "structure": 0.5}}, "core"),
    "grpo_atoms": ("sft", "grpo", {"rl_support": RL_ATOMS}, "core"),
    "control_atoms": ("sft", "control", "grpo_atoms", "core"),
    "grpo_inside": ("sft", "grpo", {"rl_support": RL_INSIDE}, "core"),  # RL on the SFT compositions
    "control_inside": ("sft", "control", "grpo_inside", "core"),
    "grpo_no_std": ("sft", "grpo", {"scale_std": False}, "all"),
    "grpo_lr_x3": ("sft", "grpo", {"lr": 3.0}, "all"),  # a multiplier of the preset's lr
    "control_lr_x3": ("sft", "control", "grpo_lr_x3", "all"),
    "grpo_temp_1.5": ("sft", "grpo", {"temperature": 1.5}, "all"),
    "grpo_g16": ("sft", "grpo", {"group_size": 16, "prompts_per_step": 0.5}, "all"),  # same rollouts
    "control_g16": ("sft", "control", "grpo_g16", "all"),
    **{name: row for b in VARIANT_BASES
       for name, row in ((b, (b, "base", {}, "all")), (f"{b}+grpo", (b, "grpo", {}, "all")),
                         (f"{b}+control", (b, "control", f"{b}+grpo", "all")))},
}
# Each GRPO condition's control: the control of the GRPO condition that samples the same items (same
# RL support, prompts per step, steps, lr and replay; rewards, KL, std scaling and temperature change
# what GRPO does with its prompts, not which prompts it sees). A test checks every pairing.
CONTROL_OF = {
    **dict.fromkeys(("grpo", "grpo_kl", "grpo_structure", "grpo_no_std", "grpo_temp_1.5"), "control"),
    "grpo_replay": "control_replay", "grpo_atoms": "control_atoms", "grpo_inside": "control_inside",
    "grpo_lr_x3": "control_lr_x3", "grpo_g16": "control_g16",
    **{f"{b}+grpo": f"{b}+control" for b in VARIANT_BASES},
}
MULTIPLIERS = ("lr", "prompts_per_step", "steps")  # overrides given as a factor of the preset's value


@dataclass
class StudyConfig:
    preset: str = "cpu"  # a key of PRESETS: tiny | smoke | cpu | smoke_chain_l2 | cpu_chain_l2
    seeds: tuple = (0, 1, 2)  # training seeds
    splits: tuple = (0, 1)  # partition seeds: which compositions are SFT / RL / held out
    conditions: tuple = ()  # condition names; () = every condition of the tier
    tier: str = "core"  # core | all
    workers: int = 0  # parallel single-thread runs (0: one per core)
    runs: str = "runs"  # run cache root
    out: str = "paper_figures"  # where protocol.{csv,png,pdf,json} go
    extra: dict = field(default_factory=dict)  # per-preset overrides {"sft": {...}, "grpo": {...}}

    def validate(self) -> StudyConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"StudyConfig.preset: unknown {self.preset!r}; allowed: {', '.join(PRESETS)}")
        if self.tier not in ("core", "all"):
            raise ValueError(f"StudyConfig.tier: must be core or all, got {self.tier!r}")
        for c in self.conditions:
            if c not in CONDITIONS:
                raise ValueError(f"StudyConfig.conditions: unknown {c!r}; allowed: {', '.join(CONDITIONS)}")
        if not self.seeds or not self.splits:
            raise ValueError("StudyConfig: need at least one seed and one split")
        return self

    def chosen(self) -> list[str]:
        if self.conditions:
            names = list(self.conditions)
        else:
            names = [n for n, c in CONDITIONS.items() if self.tier == "all" or c[3] == "core"]
        # a condition needs its base, and a GRPO condition its control, to be read against
        for n in list(names):
            base, kind, of, _ = CONDITIONS[n]
            needs = [base] + ([CONTROL_OF[n]] if kind == "grpo" else [])
            names += [m for m in needs if m not in names]
        return names


def _scaled(preset: dict, overrides: dict) -> dict:
    out = dict(overrides)
    for k in MULTIPLIERS:
        if k in out and isinstance(out[k], float) and k in preset:
            out[k] = type(preset[k])(max(1, round(preset[k] * out[k]))) if k != "lr" else preset[k] * out[k]
    return out


def unit_configs(cfg: StudyConfig, split_seed: int, seed: int) -> dict[str, tuple[str, object]]:
    """condition -> (kind, config) for one unit; GRPO / control inits are filled in later."""
    p = PRESETS[cfg.preset]
    split = dict(p["split"], partition_seed=split_seed)
    sft_kw = dict(p["sft"], **cfg.extra.get("sft", {}))
    grpo_kw = dict(p["grpo"], **cfg.extra.get("grpo", {}))
    bases = {}
    for name, over in BASES.items():
        over = dict(over)
        base_split = dict(split, **over.pop("split", lambda _: {})(split))
        kw = dict(sft_kw)
        kw.update(_scaled(sft_kw, over))
        bases[name] = base_config(kw, base_split, seed)
    grpo = lambda over: grpo_config(dict(grpo_kw, **_scaled(grpo_kw, over)), seed)
    out = {}
    for name in cfg.chosen():
        base, kind, over, _ = CONDITIONS[name]
        if kind == "base":
            out[name] = ("sft", bases[base])
        elif kind == "grpo":
            out[name] = ("grpo", grpo(over))
        else:  # labels on exactly the items its GRPO condition samples, instead of rewards
            out[name] = ("control", labelled_control(grpo(CONDITIONS[over][2]), bases[base]))
    return out


def grpo_stats(run: Path) -> dict[str, float]:
    ms = [m for m in read_metrics(run) if "reward_mean" in m]
    if not ms:
        return {}
    mean = lambda k: sum(m[k] for m in ms) / len(ms)
    return {"zero_std_frac": mean("zero_std_frac"), "reward_first": ms[0]["reward_mean"],
            "reward_last": sum(m["reward_mean"] for m in ms[-5:]) / len(ms[-5:]), "entropy": mean("entropy")}


def run_study(cfg: StudyConfig, progress: bool = True, posthoc: tuple[str, ...] = (), posthoc_split=None) -> list[dict]:
    """One row per unit x condition x support (``SUPPORTS``, then the ``posthoc`` evaluation supports,
    scored after training on ``eval_n`` items of the unit's split spec updated by ``posthoc_split(spec)``)."""
    cfg.validate()
    units = [(sp, s) for sp in cfg.splits for s in cfg.seeds]
    plans = {u: unit_configs(cfg, *u) for u in units}
    dirs = train_units(plans, lambda name: CONDITIONS[name][0], cfg.runs, cfg.workers, progress)
    p = PRESETS[cfg.preset]
    keys = [(u, name) for u in units for name in plans[u]]
    splits = {u: deeper_split(dict(p["split"], partition_seed=u[0])) for u in units}
    deeper = parallel(deeper_accuracy, [(dirs[k], splits[k[0]], p["n_deeper"], k[0][1]) for k in keys], cfg.workers)
    deeper = dict(zip(keys, deeper))
    post = {}
    if posthoc:
        specs = {u: dict(p["split"], partition_seed=u[0]) for u in units}
        specs = {u: dict(sp, **(posthoc_split(sp) if posthoc_split else {})) for u, sp in specs.items()}
        post = dict(zip(keys, parallel(posthoc_accuracy, [(dirs[k], specs[k[0]], tuple(posthoc), p["sft"]["eval_n"],
                                                            k[0][1]) for k in keys], cfg.workers)))
    rows = []
    for u in units:
        for name, (kind, _) in plans[u].items():
            run = dirs[(u, name)]
            acc, extra = final_accuracy(run), grpo_stats(run) if kind == "grpo" else {}
            acc[DEEPER] = deeper[(u, name)][p["split"]["depth"] + 1]
            acc.update(post.get((u, name), {}))
            for sup in SUPPORTS + tuple(posthoc):
                rows.append({"split": u[0], "seed": u[1], "condition": name, "base": CONDITIONS[name][0],
                             "kind": kind, "support": sup, "accuracy": acc.get(sup), **extra,
                             "run": run.name})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and 95% CI over units of accuracy and of paired differences to the control and the base."""
    acc = {(r["split"], r["seed"], r["condition"], r["support"]): r["accuracy"] for r in rows}
    units = sorted({(r["split"], r["seed"]) for r in rows})
    out = []
    for name in dict.fromkeys(r["condition"] for r in rows):
        base = CONDITIONS[name][0]
        control = CONTROL_OF.get(name)  # only a GRPO condition has a control to be read against
        for sup in SUPPORTS:
            vals = [acc.get((*u, name, sup)) for u in units]
            row = {"condition": name, "support": sup}
            row["mean"], row["ci95"], row["n"] = mean_ci(vals)
            for ref, tag in ((base, "vs_base"), (control, "vs_control")):
                diffs = [acc[(*u, name, sup)] - acc[(*u, ref, sup)] for u in units
                         if (*u, name, sup) in acc and (*u, ref, sup) in acc]
                row[f"{tag}_mean"], row[f"{tag}_ci95"], _ = mean_ci(diffs)
            zs = [r.get("zero_std_frac") for r in rows if r["condition"] == name and r["support"] == sup]
            zs = [z for z in zs if z not in (None, "")]
            row["zero_std_frac"] = sum(zs) / len(zs) if zs else None
            out.append(row)
    return out


def markdown(summary: list[dict]) -> str:
    """The summary as a Markdown table: accuracy per support, and unseen differences to control and base."""

    by = {(r["condition"], r["support"]): r for r in summary}
    names = list(dict.fromkeys(r["condition"] for r in summary))
    lines = ["| condition | unseen | unseen − control | unseen − base | seen | RL prompts | deeper | zero-std groups |",
             "|---|---|---|---|---|---|---|---|"]
    for n in names:
        u = by[(n, "unseen")]
        z = u.get("zero_std_frac")
        z = "—" if z in (None, "") else f"{100 * float(z):.0f}%"
        cells = [pm(u["mean"], u["ci95"]), pm(u["vs_control_mean"], u["vs_control_ci95"], "+"),
                 pm(u["vs_base_mean"], u["vs_base_ci95"], "+")]
        cells += [pm(by[(n, s)]["mean"], by[(n, s)]["ci95"]) for s in ("seen", "rl_prompts", "deeper")]
        lines.append(f"| `{n}` | " + " | ".join(cells) + f" | {z} |")
    return "\n".join(lines) + "\n\nAccuracy in %, mean ± 95% t-interval over (split, seed) units; differences paired.\n"


def plot(summary: list[dict], path_stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["condition"] for r in summary))
    # three panels to a row: readable ~1,000 px wide
    fig, axes = panel_grid(len(SUPPORTS) + 1, (4.2, 0.32 * len(names) + 1.6), sharey=True)
    for ax, sup in zip(axes, SUPPORTS):
        rs = {r["condition"]: r for r in summary if r["support"] == sup}
        ys = range(len(names))
        means = [rs[n]["mean"] for n in names]
        errs = [0 if rs[n]["ci95"] != rs[n]["ci95"] else rs[n]["ci95"] for n in names]
        colors = ["0.5" if CONDITIONS[n][1] == "base" else "tab:green" if CONDITIONS[n][1] == "control"
                  else "tab:blue" for n in names]
        ax.barh(list(ys), means, xerr=errs, color=colors, capsize=2)
        ax.set_title(sup)
        ax.set_xlim(0, 1)
        ax.set_xlabel("greedy exact-answer accuracy")
    ax = axes[-1]  # the comparison every claim must win: paired difference to the labelled control
    rs = {r["condition"]: r for r in summary if r["support"] == "unseen"}
    ds = [100 * rs[n]["vs_control_mean"] for n in names]
    es = [0 if rs[n]["vs_control_ci95"] != rs[n]["vs_control_ci95"] else 100 * rs[n]["vs_control_ci95"]
          for n in names]
    ax.barh(list(range(len(names))), ds, xerr=es, color="tab:purple", capsize=2)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title("unseen: minus its labelled control")
    ax.set_xlabel("paired difference (points)")
    axes[0].set_yticks(list(range(len(names))), names)
    axes[0].invert_yaxis()  # once: the panels share the axis, and each inversion flips them all
    n = max((r["n"] for r in summary), default=0)
    fig.suptitle(f"RL protocol study: {interval_note(n)}; grey = SFT base, green = labelled control, "
                 "blue = GRPO", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path_stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.protocol", __doc__, PRESETS)  # the flags every figure takes
    ap.add_argument("--tier", default="core", choices=["core", "all"])
    ap.add_argument("--conditions", nargs="+", default=[], help=f"any of: {', '.join(CONDITIONS)}")
    ap.add_argument("--name", default="protocol", help="output file stem")
    ap.add_argument("--extra", type=json.loads, default={}, help='JSON {"sft": {...}, "grpo": {...}}')
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    cfg = StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), tuple(a.conditions), a.tier, a.workers,
                      a.runs, a.out, a.extra)
    try:
        cfg.validate()
    except ValueError as e:
        ap.error(str(e))
    t0 = time.time()
    rows = run_study(cfg)
    summary = summarize(rows)
    out = Path(cfg.out)
    write_csv(rows, out / f"{a.name}.csv")
    write_csv(summary, out / f"{a.name}_summary.csv")
    plot(summary, out / a.name)
    (out / f"{a.name}.md").write_text(markdown(summary))
    example = unit_configs(cfg, cfg.splits[0], cfg.seeds[0])
    write_json({"study": vars(a), "wall_s": time.time() - t0, "provenance": provenance(),
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in example.items()},
                "summary": summary}, out / f"{a.name}.json")
    for r in summary:
        if r["support"] in ("unseen", "seen", "deeper", "rl_prompts"):
            print(f"{r['condition']:>20} {r['support']:>10}: {r['mean']:.3f} ± {r['ci95']:.3f} "
                  f"(vs control {r['vs_control_mean']:+.3f} ± {r['vs_control_ci95']:.3f}, "
                  f"vs base {r['vs_base_mean']:+.3f} ± {r['vs_base_ci95']:.3f})")
    print(f"wall {time.time() - t0:.0f} s -> {out / a.name}.csv")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
