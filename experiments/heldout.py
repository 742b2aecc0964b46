"""Findings 2 and 3: held-out skills (fig2) or routings (fig3) reintroduced in RL as atoms vs in compositions.

    python -m experiments.fig2 [--preset tiny|cpu] [--seeds 0 1 2] [--splits 0 1] [--replay]
    python -m experiments.fig3 ...

The task and model are the chosen regime's (``experiments.protocol.PRESETS``, docs/regime.md;
``--condition`` another of ``experiments.regime.CONDITIONS``, e.g. a compound regime, whose atoms,
held-out ones included, are shown in their own format and its compounds in the compound format):
explicit traces, no position encoding, L_train = 3 over 8 skills x 3 routings, SFT on L = 1, 2, 3
(L = 2, 3 in the compound conditions) compounds of 10% of the compositions it may use. Per (split,
seed) unit: an SFT base whose compositions never use the held-out modules. SFT shows them only
in isolation, as L = 1 atoms (``heldout_atoms``): a policy trained from scratch that never saw a
module has p0 = 0 on it and GRPO gets no reward to learn from, so "held out of SFT" here means
"held out of SFT's compositions". From that base, continuations of equal budget:

- ``grpo_atoms`` / ``grpo_composed``: GRPO whose prompts reintroduce the held-out modules as atoms
  (``rl_atoms``) or inside depth-L compositions (``rl_composed``); fig3 also ``grpo_shallow``, the
  held-out routing reintroduced inside depth L - 1 compositions (``rl_shallow``: shallow vs deep);
- ``control_<arm>``: continued SFT with labels on exactly the prompts each GRPO arm samples, in
  the same order (``hlsm.control.labelled_control``), the comparison RL must win;
- with ``--replay``, the same with ``+replay``: each step also trains on labelled SFT sequences
  (half as many as RL prompts; GRPO's replay NLL term, the control's batch mix).

Every continuation is scored at steps 0, half and end on the same items: ``unseen``
(compositions at L_train using a held-out module that no run trains on: the claim's set),
``deeper`` (the same at L_train + 1), ``rl_prompts`` (the composed arm's RL compositions, fresh
inputs), ``eval_heldout_atoms`` (fresh inputs) and ``seen`` (the SFT compositions: forgetting).
Each GRPO arm's regime is logged: its first-step reward (p0 on its prompts) and the fraction of
tied groups. The split index picks which modules are held out and the composition partition.
Writes ``figN.{png,pdf,csv,json}``, ``figN_curves.csv`` and ``figN_units.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments import protocol, regime
from experiments.engine import base_config, eval_points, final_accuracy, grpo_config, train_units
from experiments.report import (
    README_COLUMNS,
    figure_parser,
    grpo_regime,
    interval_note,
    mean_ci,
    output_dir,
    paired,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from hlsm.control import labelled_control
from hlsm.names import (
    ATOMS,
    DEEPER,
    EVAL_ATOMS,
    EVAL_HELDOUT_ATOMS,
    HELDOUT_ATOMS,
    RL_ATOMS,
    RL_COMPOSED,
    RL_PROMPTS,
    RL_SHALLOW,
    SEEN,
    SFT,
    UNSEEN,
)

SUPPORTS = (UNSEEN, DEEPER, RL_PROMPTS, EVAL_HELDOUT_ATOMS, SEEN)
ARMS = {"atoms": RL_ATOMS, "composed": RL_COMPOSED, "shallow": RL_SHALLOW}  # arm -> the split's RL support
REPLAY = 0.5  # "+replay" conditions: labelled SFT sequences per step, as a fraction of the RL prompts
CURVE_POINTS = 2  # continuations are scored every 1/CURVE_POINTS of their updates and at step 0 (curves)

# Per figure: which modules each split index holds out (cycled) and its reintroduction arms.
SETUPS = {
    "fig2": dict(kind="skill", heldout=[("swap_pairs", "atbash"), ("rotate_left", "shift_down"),
                                        ("reverse", "shift_up")], arms=("atoms", "composed")),
    "fig3": dict(kind="routing", heldout=[("map_halves",), ("twice",)], arms=("atoms", "composed", "shallow")),
}
PRESETS = {name: protocol.PRESETS[name] for name in ("tiny", "cpu")}  # the chosen regime's
REGIME_PRESET = {"tiny": "smoke", "cpu": "cpu"}  # figure preset -> its sizes in experiments.regime.PRESETS
SFT_MIX = {SFT: 1.0, ATOMS: 0.25, HELDOUT_ATOMS: 0.1}  # SFT batch shares: compounds, kept atoms, held-out atoms


def conditions(figure: str, replay: bool = False) -> tuple[str, ...]:
    """The base, then each arm's GRPO run and its labelled control (and their +replay twins)."""
    tags = ("", "+replay") if replay else ("",)
    return ("sft", *(f"{kind}_{arm}{tag}" for tag in tags for arm in SETUPS[figure]["arms"]
                     for kind in ("grpo", "control")))


def preset_of(preset: str, condition: str = regime.CHOSEN) -> dict:
    """The preset's run sizes in the task, model and trace formats of regime ``condition`` (the chosen
    regime's: ``PRESETS[preset]``). In a compound condition the held-out modules' atoms are shown in
    the atoms' format, as every other atom."""
    p = regime.study_preset(REGIME_PRESET[preset], condition)
    formats = p["sft"].get("formats")
    if formats:  # the held-out split has no eval_atoms: its atoms are scored as eval_heldout_atoms
        atoms = {k: v for k, v in formats.items() if k != EVAL_ATOMS}
        p["sft"]["formats"] = {**atoms, HELDOUT_ATOMS: formats[ATOMS], EVAL_HELDOUT_ATOMS: formats[ATOMS]}
    return p


def split_spec(figure: str, split: int, preset: str, condition: str = regime.CHOSEN) -> dict:
    """Regime ``condition``'s task (default: the chosen regime's) with ``figure``'s modules held out of
    SFT's compositions."""
    task, s = preset_of(preset, condition)["split"], SETUPS[figure]
    skills = list(task["skills"])
    routings = list(regime.ROUTINGS) if s["kind"] == "routing" else list(task["routings"])
    held = s["heldout"][split % len(s["heldout"])]
    if not set(held) <= set(skills + routings):  # a small preset's inventory: hold out its last skill
        held = (skills[-1],)
    depth = task["depth"]
    return {"factory": "heldout", "heldout": list(held), "depth": depth, "skills": skills, "routings": routings,
            "sft": task["sft"], "sft_depths": task.get("sft_depths", [depth]), "rl": task["rl"],
            "test": task["heldout"], "deeper": [depth + 1], "shallow": depth - 1 if "shallow" in s["arms"] else 0,
            "partition_seed": split}


def unit_configs(figure: str, preset: str, split: int, seed: int, replay: bool = False,
                 condition: str = regime.CHOSEN) -> dict[str, tuple[str, object]]:
    """name -> (kind, config) for one unit; kind is sft | grpo | control (inits filled in later)."""
    p = preset_of(preset, condition)
    spec = split_spec(figure, split, preset, condition)
    # the engine's recipe, scored on this figure's supports; continuations also mid-run (curves)
    base = base_config(dict(p["sft"], train_supports=dict(SFT_MIX), eval_supports=SUPPORTS, eval_every=0,
                            ckpt_every=max(1, p["sft"]["steps"] // 4)), spec, seed)
    g = dict(p["grpo"], eval_every=max(1, p["grpo"]["steps"] // CURVE_POINTS))
    out = {"sft": ("sft", base)}
    for replay_fraction in (0.0, REPLAY) if replay else (0.0,):
        tag = "+replay" if replay_fraction else ""
        for arm in SETUPS[figure]["arms"]:
            grpo = grpo_config(dict(g, rl_support=ARMS[arm], replay_fraction=replay_fraction, replay_support=SFT,
                                    eval_supports=SUPPORTS), seed)
            out[f"grpo_{arm}{tag}"] = ("grpo", grpo)
            # the same RL prompts per update in the same order, plus the same replayed SFT items
            out[f"control_{arm}{tag}"] = ("control", labelled_control(grpo, base))
    return out


def run_units(figure: str, preset: str, splits, seeds, runs="runs", workers: int = 0, progress: bool = True,
              replay: bool = False, only: tuple[str, ...] = (), condition: str = regime.CHOSEN
              ) -> tuple[list[dict], list[dict], list[dict]]:
    """Train (or re-use) one figure's runs (``only``: just these conditions and the base); returns
    (final rows, curve rows, GRPO regime rows)."""
    names = tuple(n for n in conditions(figure, replay) if not only or n == "sft" or n in only)
    units = [(sp, s) for sp in splits for s in seeds]
    plans = {u: {n: job for n, job in unit_configs(figure, preset, *u, replay, condition).items() if n in names}
             for u in units}
    dirs = train_units(plans, lambda name: "sft", runs, workers, progress)
    finals, curves, tied = [], [], []
    for u in units:
        held = "+".join(split_spec(figure, u[0], preset, condition)["heldout"])
        # step-0 accuracies: a GRPO run's evaluation of the base (the same items every continuation sees)
        grpo = [eval_points(dirs[(u, n)]) for n in names if n.startswith("grpo")]
        start = next((pts[0] for pts in grpo if 0 in pts), {})
        for n in names:
            run = dirs[(u, n)]
            acc = final_accuracy(run)
            for sup in SUPPORTS:
                finals.append({"split": u[0], "seed": u[1], "heldout": held, "condition": n, "support": sup,
                               "accuracy": acc.get(sup), "run": run.name})
            if n.startswith("grpo"):  # p0 on the arm's prompts (its first step's reward) and tied groups
                tied.append({"split": u[0], "seed": u[1], "heldout": held, "condition": n,
                               **protocol.grpo_stats(run)})
            if n == "sft":
                continue
            points = eval_points(run)
            points.setdefault(0, start)
            for step in sorted(points):
                for sup in SUPPORTS:
                    if f"eval/{sup}" in points[step]:
                        curves.append({"split": u[0], "seed": u[1], "heldout": held, "condition": n,
                                       "step": step, "support": sup, "accuracy": points[step][f"eval/{sup}"]})
    return finals, curves, tied


def claims(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The paired differences each figure reports, among the conditions it ran: composed vs atoms
    (and shallow vs deep), each GRPO arm vs its labelled control and vs the base."""
    pairs = [("grpo_composed", "grpo_atoms"), ("grpo_shallow", "grpo_composed"), ("control_composed", "control_atoms"),
             *((f"grpo_{arm}", f"control_{arm}") for arm in ARMS), *((f"grpo_{arm}", "sft") for arm in ARMS),
             *((f"control_{arm}", "sft") for arm in ARMS)]
    out = []
    for tag in ("", "+replay"):
        for a, b in pairs:
            a, b = a + tag, b + (tag if b != "sft" else "")
            if a in names and b in names:
                out.append((a, b))
    return out


def summarize(finals: list[dict], curves: list[dict], names: tuple[str, ...]
              ) -> tuple[list[dict], list[dict], list[dict]]:
    """(final accuracy per condition x support, paired differences, curve means with intervals)."""
    table = []
    for n in names:
        for sup in SUPPORTS:
            m, h, k = mean_ci([r["accuracy"] for r in finals if r["condition"] == n and r["support"] == sup])
            table.append({"condition": n, "support": sup, "mean": m, "ci95": h, "n": k})
    diffs = []
    for a, b in claims(names):
        for sup in SUPPORTS:
            m, h, k = paired([r for r in finals if r["support"] == sup], a, b, "accuracy")
            diffs.append({"condition": a, "minus": b, "support": sup, "diff_mean": m, "diff_ci95": h, "n": k})
    curve = []
    for n in names[1:]:
        for sup in SUPPORTS:
            for step in sorted({c["step"] for c in curves if c["condition"] == n}):
                m, h, k = mean_ci([c["accuracy"] for c in curves
                                   if c["condition"] == n and c["support"] == sup and c["step"] == step])
                if k:
                    curve.append({"condition": n, "support": sup, "step": step, "mean": m, "ci95": h, "n": k})
    return table, diffs, curve


STYLE = {"grpo_atoms": ("tab:orange", "-"), "grpo_composed": ("tab:blue", "-"), "grpo_shallow": ("tab:green", "-"),
         "control_atoms": ("tab:orange", ":"), "control_composed": ("tab:blue", ":"),
         "control_shallow": ("tab:green", ":")}
TITLES = {UNSEEN: "unseen compositions with a held-out module", DEEPER: "the same at L_train + 1",
          RL_PROMPTS: "composed-RL compositions", EVAL_HELDOUT_ATOMS: "held-out modules as atoms",
          SEEN: "SFT compositions"}


def plot(curve: list[dict], figure: str, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = ("", "+replay") if any(c["condition"].endswith("+replay") for c in curve) else ("",)
    # three panels to a row (readable ~1,000 px wide), two rows per tag; the sixth cell holds the legend
    rows_per_tag = -(-(len(SUPPORTS) + 1) // README_COLUMNS)
    fig, axes = plt.subplots(rows_per_tag * len(tags), README_COLUMNS,
                             figsize=(4.2 * README_COLUMNS, 3.3 * rows_per_tag * len(tags) + 0.4),
                             sharey=True, squeeze=False)
    for row, tag in enumerate(tags):
        cells = list(axes[row * rows_per_tag:(row + 1) * rows_per_tag].flat)
        for ax, sup in zip(cells, SUPPORTS):
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
            ax.set_title(TITLES[sup] + (" (+ SFT replay)" if tag else ""), fontsize=10)
            ax.set_xlabel("RL (or control) step")
            ax.set_ylim(0, 100)
            if ax.get_subplotspec().is_first_col():  # the panels share their y axis
                ax.set_ylabel("greedy accuracy (%)")
        for ax in cells[len(SUPPORTS):]:  # the spare cell: this row's legend, clear of every curve
            ax.set_axis_off()
            ax.legend(*cells[0].get_legend_handles_labels(), loc="center", fontsize=10, frameon=False)
    what = "skills" if SETUPS[figure]["kind"] == "skill" else "routings"
    n = max((c["n"] for c in curve), default=0)
    fig.suptitle(f"{figure}: held-out {what} reintroduced in RL as atoms vs inside compositions\n"
                 f"solid: GRPO, dotted: labelled control; {interval_note(n, band='bands')}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def main(figure: str, argv=None, doc: str = __doc__) -> int:
    ap = figure_parser(f"python -m experiments.{figure}", doc, PRESETS)
    ap.add_argument("--replay", action="store_true", help="also the +replay twin of every arm and control")
    ap.add_argument("--condition", default=regime.CHOSEN, choices=list(regime.CONDITIONS),
                    help="the regime condition's task, model and trace formats (default: the chosen regime's); "
                         "another condition writes under <out>/<condition>/")
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    if a.condition != regime.CHOSEN:  # never over the chosen regime's files
        a.out = str(Path(a.out) / a.condition)
        Path(a.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    names = conditions(figure, a.replay)
    finals, curves, tied = run_units(figure, a.preset, a.splits, a.seeds, a.runs, a.workers, replay=a.replay,
                                     condition=a.condition)
    table, diffs, curve = summarize(finals, curves, names)
    rl = grpo_regime(tied)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(table + diffs, out / f"{figure}.csv")
    write_csv(finals, out / f"{figure}_units.csv")
    write_csv(curves, out / f"{figure}_curves.csv")
    write_csv(tied, out / f"{figure}_regime.csv")
    plot(curve, figure, out / figure)
    write_json({"figure": figure, "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "setup": SETUPS[figure],
                "split_specs": {sp: split_spec(figure, sp, a.preset, a.condition) for sp in a.splits},
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in unit_configs(
                    figure, a.preset, a.splits[0], a.seeds[0], a.replay, a.condition).items()},
                "runs": sorted({r["run"] for r in finals}), "final": table, "differences": diffs,
                "regime": rl, "curves": curve}, out / f"{figure}.json")
    for r in table:
        print(f"{r['condition']:>17} {r['support']:>18}: {100 * r['mean']:5.1f} ± {100 * r['ci95']:.1f}")
    for d in diffs:
        if d["support"] in (UNSEEN, DEEPER, RL_PROMPTS):
            print(f"{d['condition']:>17} − {d['minus']:<17} {d['support']:>10}: "
                  f"{100 * d['diff_mean']:+5.1f} ± {100 * d['diff_ci95']:.1f}")
    for r in rl:
        print(f"{r['condition']:>17} regime: p0 (first-step reward) {100 * r['reward_first']:.1f} ± "
              f"{100 * r['reward_first_ci95']:.1f}, last {100 * r['reward_last']:.1f}, tied groups "
              f"{100 * r['zero_std_frac']:.1f} ± {100 * r['zero_std_frac_ci95']:.1f}%")
    print(f"wall {time.time() - t0:.0f} s -> {out / figure}.png")
    return 0
