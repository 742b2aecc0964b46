"""Findings 2 and 3: held-out skills (fig2) or routings (fig3) reintroduced in RL as atoms vs in compositions.

    python -m experiments.fig2 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0]
    python -m experiments.fig3 ...

Per (split, seed) unit: an SFT base whose compositions never use the held-out modules. SFT shows
them only in isolation, as L = 1 atoms (``heldout_atoms``): a policy trained from scratch that
never saw a module has p0 = 0 on it and GRPO gets no reward to learn from, so "held out of SFT"
here means "held out of SFT's compositions". From that base, four continuations of equal budget:

- ``grpo_atoms`` / ``grpo_composed``: GRPO whose prompts reintroduce the held-out modules as atoms
  (``rl_atoms``) or inside depth-L compositions (``rl_composed``);
- ``control_atoms`` / ``control_composed``: continued SFT with labels on exactly the prompts each
  GRPO arm samples, in the same order (``hlsm.control.labelled_control``), the comparison RL must win;
- the same four with ``+replay``: each step also trains on labelled SFT sequences (half as many as
  RL prompts; GRPO's replay NLL term, the control's batch mix), the protocol study's best guard
  against forgetting.

Every continuation is scored every ``eval_every`` steps on the same items: ``unseen`` (compositions
using a held-out module that no run trains on: the claim's set), ``rl_prompts`` (the composed
arm's RL compositions, fresh inputs), ``eval_heldout_atoms`` (fresh inputs) and ``seen`` (the SFT
compositions: forgetting). The split index picks which modules are held out and the composition
partition. Writes ``figN.{png,pdf,csv,json}``, ``figN_curves.csv`` and ``figN_units.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.engine import base_config, final_accuracy, grpo_config, train_units
from experiments.report import (
    figure_parser,
    mean_ci,
    output_dir,
    paired,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from hlsm.checkpoint import read_metrics
from hlsm.control import labelled_control
from hlsm.names import (
    ATOMS,
    EVAL_HELDOUT_ATOMS,
    HELDOUT_ATOMS,
    RL_ATOMS,
    RL_COMPOSED,
    RL_PROMPTS,
    SEEN,
    SFT,
    UNSEEN,
)
from hlsm.support import DEFAULT_SPLIT

SUPPORTS = (UNSEEN, RL_PROMPTS, EVAL_HELDOUT_ATOMS, SEEN)
ARMS = {"atoms": RL_ATOMS, "composed": RL_COMPOSED}  # reintroduction arm -> the split's RL support
REPLAY = 0.5  # "+replay" conditions: labelled SFT sequences per step, as a fraction of the RL prompts
CONDITIONS = ("sft", "grpo_atoms", "grpo_composed", "control_atoms", "control_composed", "grpo_atoms+replay",
              "grpo_composed+replay", "control_atoms+replay", "control_composed+replay")

# Per figure: which modules each split index holds out (cycled), from which inventory.
SKILLS = tuple(DEFAULT_SPLIT["skills"])
SETUPS = {
    "fig2": dict(kind="skill", heldout=[("swap_pairs", "atbash"), ("rotate_left", "shift_down"),
                                        ("reverse", "shift_up")],
                 skills=SKILLS, routings=("chain",), splits=[0, 1]),
    # three routings are harder to learn than one: at the shared 1,500 updates the base reached only
    # 44% on its SFT compositions (seed 1), at 3,000 it reaches 97%
    "fig3": dict(kind="routing", heldout=[("map_halves",), ("twice",)],
                 skills=SKILLS[:6], routings=("chain", "twice", "map_halves"), sft_steps={"cpu": 3000},
                 splits=[0, 1]),
}
# A figure may give its SFT base another budget per preset (``sft_steps``, as fig3 does).
PRESETS = {
    "smoke": dict(sft=dict(preset="smoke", steps=60, batch_size=16, lr=3e-3, warmup_steps=10, eval_n=24),
                  grpo=dict(steps=4, prompts_per_step=4, group_size=4, lr=3e-4, eval_n=24, max_new_tokens=24,
                            eval_every=2)),
    # half the protocol study's SFT budget (compute: 3 bases per figure), the protocol's GRPO budget
    "cpu": dict(sft=dict(preset="cpu", steps=1500, batch_size=64, micro_batch_size=32, lr=1e-3,
                         warmup_steps=100, eval_n=192),
                grpo=dict(steps=100, prompts_per_step=16, group_size=8, lr=1e-4, eval_n=192, max_new_tokens=32,
                          eval_every=20)),
}
PRESETS["tiny"] = PRESETS["smoke"]  # the figures' pipeline-check preset name (experiments.protocol.PRESETS)
SMALL = ("smoke", "tiny")  # presets that also shrink the task (4 skills, one held out)
SFT_MIX = {SFT: 1.0, ATOMS: 0.25, HELDOUT_ATOMS: 0.1}  # SFT batch shares: compounds, kept atoms, held-out atoms


def split_spec(figure: str, split: int, preset: str) -> dict:
    s = SETUPS[figure]
    skills = s["skills"][:4] if preset in SMALL and s["kind"] == "skill" else s["skills"]
    held = s["heldout"][split % len(s["heldout"])]
    if preset in SMALL and s["kind"] == "skill":
        held = held[:1] if held[0] in skills else (skills[0],)
    return {"factory": "heldout", "heldout": list(held), "depth": 2, "skills": list(skills),
            "routings": list(s["routings"]), "partition_seed": split}


def unit_configs(figure: str, preset: str, split: int, seed: int) -> dict[str, tuple[str, object]]:
    """condition -> (kind, config) for one unit; kind is sft | grpo | control (inits filled in later)."""
    p = PRESETS[preset]
    spec = split_spec(figure, split, preset)
    sft_kw = dict(p["sft"], steps=SETUPS[figure].get("sft_steps", {}).get(preset, p["sft"]["steps"]))
    # the engine's recipe, scored on this figure's supports; GRPO also every ``eval_every`` steps (curves)
    base = base_config(dict(sft_kw, train_supports=dict(SFT_MIX), eval_supports=SUPPORTS, eval_every=0,
                            ckpt_every=max(1, sft_kw["steps"] // 4)), spec, seed)
    g = p["grpo"]
    out = {"sft": ("sft", base)}
    for replay in (0.0, REPLAY):
        tag = "+replay" if replay else ""
        for arm, support in ARMS.items():
            grpo = grpo_config(dict(g, rl_support=support, replay_fraction=replay, replay_support=SFT,
                                    eval_supports=SUPPORTS), seed)
            out[f"grpo_{arm}{tag}"] = ("grpo", grpo)
            # the same RL prompts per update in the same order, plus the same replayed SFT items
            out[f"control_{arm}{tag}"] = ("control", labelled_control(grpo, base))
    return out


def _eval_points(run: Path) -> dict[int, dict]:
    """step -> the metrics record holding a run's evaluation at that step."""
    return {m["step"]: m for m in read_metrics(run) if any(k.startswith("eval/") for k in m)}


def run_units(figure: str, preset: str, splits, seeds, runs="runs", workers: int = 0, progress: bool = True,
              conditions: tuple[str, ...] = CONDITIONS) -> tuple[list[dict], list[dict]]:
    """Train (or re-use) the runs of ``conditions`` (the SFT base always); returns (final rows, curve rows)."""
    conditions = ("sft", *(c for c in conditions if c != "sft"))
    units = [(sp, s) for sp in splits for s in seeds]
    plans = {u: {n: job for n, job in unit_configs(figure, preset, *u).items() if n in conditions} for u in units}
    dirs = train_units(plans, lambda name: "sft", runs, workers, progress)
    finals, curves = [], []
    for u in units:
        held = "+".join(split_spec(figure, u[0], preset)["heldout"])
        # step-0 accuracies: a GRPO run's evaluation of the base (the same items every continuation sees)
        grpo = [_eval_points(dirs[(u, n)]) for n in conditions if n.startswith("grpo")]
        start = next((pts[0] for pts in grpo if 0 in pts), {})
        for n in conditions:
            run = dirs[(u, n)]
            acc = final_accuracy(run)
            for sup in SUPPORTS:
                finals.append({"split": u[0], "seed": u[1], "heldout": held, "condition": n, "support": sup,
                               "accuracy": acc.get(sup), "run": run.name})
            if n == "sft":
                continue
            points = _eval_points(run)
            points.setdefault(0, start)
            for step in sorted(points):
                for sup in SUPPORTS:
                    if f"eval/{sup}" in points[step]:
                        curves.append({"split": u[0], "seed": u[1], "heldout": held, "condition": n,
                                       "step": step, "support": sup, "accuracy": points[step][f"eval/{sup}"]})
    return finals, curves


CLAIMS = tuple((a + tag, b + (tag if b != "sft" else "")) for tag in ("", "+replay") for a, b in (
    ("grpo_composed", "grpo_atoms"), ("grpo_composed", "control_composed"), ("grpo_atoms", "control_atoms"),
    ("control_composed", "control_atoms"), ("grpo_composed", "sft"), ("grpo_atoms", "sft")))


def summarize(finals: list[dict], curves: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(final accuracy per condition x support, paired differences, curve means with intervals)."""
    table = []
    for n in CONDITIONS:
        for sup in SUPPORTS:
            m, h, k = mean_ci([r["accuracy"] for r in finals if r["condition"] == n and r["support"] == sup])
            table.append({"condition": n, "support": sup, "mean": m, "ci95": h, "n": k})
    diffs = []
    for a, b in CLAIMS:
        for sup in SUPPORTS:
            m, h, k = paired([r for r in finals if r["support"] == sup], a, b, "accuracy")
            diffs.append({"condition": a, "minus": b, "support": sup, "diff_mean": m, "diff_ci95": h, "n": k})
    curve = []
    for n in CONDITIONS[1:]:
        for sup in SUPPORTS:
            for step in sorted({c["step"] for c in curves if c["condition"] == n}):
                m, h, k = mean_ci([c["accuracy"] for c in curves
                                   if c["condition"] == n and c["support"] == sup and c["step"] == step])
                if k:
                    curve.append({"condition": n, "support": sup, "step": step, "mean": m, "ci95": h, "n": k})
    return table, diffs, curve


STYLE = {"grpo_atoms": ("tab:orange", "-"), "grpo_composed": ("tab:blue", "-"),
         "control_atoms": ("tab:orange", ":"), "control_composed": ("tab:blue", ":")}
TITLES = {UNSEEN: "unseen compositions with a held-out module", RL_PROMPTS: "composed-RL compositions",
          EVAL_HELDOUT_ATOMS: "held-out modules as atoms", SEEN: "SFT compositions"}


def plot(curve: list[dict], figure: str, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SUPPORTS), figsize=(4.2 * len(SUPPORTS), 6.8), sharey=True)
    for row, tag in enumerate(("", "+replay")):
        for ax, sup in zip(axes[row], SUPPORTS):
            for n, (color, ls) in STYLE.items():
                pts = [c for c in curve if c["condition"] == n + tag and c["support"] == sup]
                if not pts:
                    continue
                xs = [c["step"] for c in pts]
                ys = [100 * c["mean"] for c in pts]
                hs = [0 if c["ci95"] != c["ci95"] else 100 * c["ci95"] for c in pts]
                ax.plot(xs, ys, color=color, ls=ls, label=(n + tag).replace("_", " "))
                ax.fill_between(xs, [y - h for y, h in zip(ys, hs)], [y + h for y, h in zip(ys, hs)], color=color,
                                alpha=0.12)
            ax.set_title(TITLES[sup] + (" (+ SFT replay)" if tag else ""), fontsize=9)
            ax.set_xlabel("RL (or control) step")
            ax.set_ylim(0, 100)
        axes[row][0].set_ylabel("greedy accuracy (%)")
        axes[row][0].legend(fontsize=7)
    what = "skills" if SETUPS[figure]["kind"] == "skill" else "routings"
    fig.suptitle(f"{figure}: held-out {what} reintroduced in RL as atoms vs inside compositions "
                 "(solid: GRPO, dotted: labelled control); mean over units, 95% t-band", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def main(figure: str, argv=None, doc: str = __doc__) -> int:
    ap = figure_parser(f"python -m experiments.{figure}", doc, PRESETS)
    ap.set_defaults(splits=SETUPS[figure].get("splits", [0]))  # the committed figure's splits
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    finals, curves = run_units(figure, a.preset, a.splits, a.seeds, a.runs, a.workers)
    table, diffs, curve = summarize(finals, curves)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(table + diffs, out / f"{figure}.csv")
    write_csv(finals, out / f"{figure}_units.csv")
    write_csv(curves, out / f"{figure}_curves.csv")
    plot(curve, figure, out / figure)
    write_json({"figure": figure, "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "setup": SETUPS[figure],
                "split_specs": {sp: split_spec(figure, sp, a.preset) for sp in a.splits},
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in
                                          unit_configs(figure, a.preset, a.splits[0], a.seeds[0]).items()},
                "runs": sorted({r["run"] for r in finals}), "final": table, "differences": diffs,
                "curves": curve}, out / f"{figure}.json")
    for r in table:
        print(f"{r['condition']:>17} {r['support']:>13}: {100 * r['mean']:5.1f} ± {100 * r['ci95']:.1f}")
    for d in diffs:
        if d["support"] in ("unseen", "rl_prompts"):
            print(f"{d['condition']:>17} − {d['minus']:<17} {d['support']:>10}: "
                  f"{100 * d['diff_mean']:+5.1f} ± {100 * d['diff_ci95']:.1f}")
    print(f"wall {time.time() - t0:.0f} s -> {out / figure}.png")
    return 0
