"""Figure 5 (probes): do the layers identify the latent skills and routings, before and after RL?

    python -m experiments.fig5 [--preset tiny|cpu] [--seeds 0 1 2] [--splits 0 1] [--targets skill routing]
    python -m experiments.fig5 --fair <fair.csv> --runs <its runs> [--splits 0 1] [--seeds 0 1 2]

``--fair``: the skills of a fair-test study's runs instead (``experiments.fair``, in a condition whose
traces show the steps: not ``answer``): its base, GRPO, labelled and RFT controls of every unit at
plateau, probed on the formats they trained on (``probes.report.run_data``); written to
``<out>/fair_probes/`` (another condition than the chosen regime: ``<out>/<condition>/fair_probes/``).
In a chunked condition (granularity g) the g steps of a chunk share its ``before`` position.

Skills: the protocol study's runs (SFT base, SFT + GRPO, labelled control) on its task (in the
``cpu`` preset the chosen regime's: 8 skills x chain / twice / map_halves, L = 3). Routings: fig3's
runs (SFT base, composed GRPO, composed control) on the same inventory with one routing held out
of SFT's compositions. Beside each, a
random-init model of the same shape and seed. Per layer, with probes.linear at the position
*before* each step's value (no surface leakage of the step's own output): the identification
score (chance-corrected Hungarian-matched accuracy) and selectivity (accuracy minus a control
task on surface tokens) of a probe trained on compositions the run trained on, tested on held-out
examples of those (``seen``) and on compositions it never trained on (``unseen``). Causal: the
interchange rate of patching step t's module token in the prompt with a twin module's at each
layer (probes.causal), on unseen items. Mean over (split, seed) units with 95% t-intervals; the
probe results are cached in each run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments import protocol
from experiments.report import (
    figure_parser,
    interval_note,
    legend_below,
    mean_ci,
    output_dir,
    paired,
    panel_grid,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from experiments.runs import cached_json
from hlsm.names import EVAL_HELDOUT_ATOMS, probe_stream

N_ITEMS = {"tiny": 16, "smoke": 64, "cpu": 192, "smoke_chain_l2": 16, "cpu_chain_l2": 192}  # items per probe support
# unseen items patched per (layer, t): causal patching regenerates
N_CAUSAL = {"tiny": 8, "smoke": 16, "cpu": 64, "smoke_chain_l2": 8, "cpu_chain_l2": 64}
MODELS = ("random", "sft", "rl", "control")
FAIR_MODELS = (*MODELS, "rft")  # --fair: the fair test's on-policy control too
LABELS = {"random": "random init", "sft": "SFT", "rl": "SFT + GRPO", "control": "SFT + labelled control",
          "rft": "SFT + RFT control"}
FAIR_ARMS = {"sft": "base", "rl": "grpo", "control": "control", "rft": "rft"}  # model -> experiments.fair's name
TASKS = {  # target -> (condition name of sft / rl / control in its runs, probe item supports)
    "skill": ({"sft": "sft", "rl": "grpo", "control": "control"}, ("seen", "unseen")),
    "routing": ({"sft": "sft", "rl": "grpo_composed", "control": "control_composed"},
                ("seen", EVAL_HELDOUT_ATOMS, "rl_prompts", "unseen")),
}


def probe_run(run: Path, target: str, supports: tuple[str, ...], seed: int, random_init: bool, n_items: int,
              n_causal: int) -> dict:
    """Probe rows (per eval x layer) and causal rows (per t x layer) of one run's policy or its random twin."""
    import torch

    from hlsm.checkpoint import load_policy
    from hlsm.model import HLSM
    from hlsm.policy import Policy
    from probes.activations import capture
    from probes.causal import patch_step_layers
    from probes.linear import probe_report
    from probes.report import run_data

    split, fmt, g, names = run_data(run)
    model = load_policy(run)[0]
    if random_init:
        torch.manual_seed(seed)
        model = Policy(model.config).eval()
    train = [split.train[n] for n in sorted(names) if n in split.train]
    seen = lambda comp: any(s.contains(comp) for s in train)
    items = [ex for s in supports for ex in HLSM(support=split.support(s), seed=seed, fmt=fmt, granularity=g,
                                                  stream=probe_stream(s)).sample(n_items)]
    acts = capture(model, items, ("before",), seen)
    rows = probe_report(acts, target, seed=seed)
    unseen = [ex for ex in items if not seen(ex.composition)][:n_causal]
    causal = []
    # a random model is never right on an item, so its interchange rate is undefined: not patched
    # (and it never writes the end token, so each of its generations would run to the length cap)
    layers = range(model.config.n_layer + 1) if not random_init else ()
    res = {t: patch_step_layers(model, unseen, t, layers, target, seed=seed) for t in (1, 2)} if layers else {}
    for layer in layers:
        for t in (1, 2):
            causal.append({"layer": acts.layer_names[layer], "t": t, **res[t][layer].summary()})
    return {"probe": rows, "causal": causal, "n_rows": len(acts), "n_unseen_items": len(unseen)}


FAIR_COLUMNS = ("split", "seed", "condition", "run", "at_plateau")  # what --fair reads of a fair.csv


def fair_runs(csv: str, runs: str, units: list) -> tuple[dict, list, str]:
    """The skill target's runs of a fair-test study (``experiments.fair``'s ``fair.csv``): (runs keyed
    like ``collect``'s, the units of ``units`` whose base met the plateau rule: the claim units, the
    study's regime condition: files older than its regime column are the chosen regime's).
    ValueError (one line) when the file, its units or their runs cannot be probed."""
    from experiments import regime
    from experiments.report import read_csv
    from hlsm.evaluate import parse_cell

    rows = read_csv(csv)
    missing = [c for c in FAIR_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise ValueError(f"--fair {csv}: no column {', '.join(missing)} (experiments.fair's fair.csv has them)")
    out = {("skill", int(r["split"]), int(r["seed"]), r["condition"]): Path(runs) / r["run"] for r in rows}
    at = sorted({(int(r["split"]), int(r["seed"])) for r in rows if parse_cell(r["at_plateau"]) is True} & set(units))
    if not at:
        raise ValueError(f"--fair {csv}: no unit of {units} met the plateau rule there")
    for u in at:
        for arm in FAIR_ARMS.values():
            run = out.get(("skill", *u, arm))
            if run is None:
                raise ValueError(f"--fair {csv}: unit {u} has no {arm!r} row (it probes {list(FAIR_ARMS.values())})")
            if not (run / "config.json").is_file():
                raise ValueError(f"--runs {runs}: no run {run.name} of {csv} there (the study's --runs)")
    return out, at, rows[0].get("regime") or regime.CHOSEN


def collect(a, fair: tuple[dict, list] | None = None) -> tuple[list[dict], list[dict]]:
    """Probe and causal rows of every model of every unit; ``fair``: (runs, units) of ``fair_runs``."""
    units = [(sp, s) for sp in a.splits for s in a.seeds]
    runs = {}
    models, conds = MODELS, dict(TASKS["skill"][0])
    if fair:  # the fair study's runs; its units at plateau only
        runs, at = fair
        if set(at) != set(units):
            print(f"fig5 --fair: units {sorted(set(units) - set(at))} left out: their base missed the plateau rule")
        units, models, conds = at, FAIR_MODELS, FAIR_ARMS
    elif "skill" in a.targets:  # only the runs of the targets asked for are trained (or read)
        study = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo",), "core", a.workers,
                                     a.runs, a.out)
        for r in protocol.run_study(study):
            runs[("skill", r["split"], r["seed"], r["condition"])] = Path(a.runs) / r["run"]
    if "routing" in a.targets:
        from experiments import heldout

        finals = heldout.run_units("fig3", a.preset, a.splits, a.seeds, a.runs, a.workers,
                                   only=tuple(TASKS["routing"][0].values()))[0]
        for r in finals:
            runs[("routing", r["split"], r["seed"], r["condition"])] = Path(a.runs) / r["run"]
    probe, causal = [], []
    for target, (names, supports) in TASKS.items():
        if target not in a.targets:
            continue
        names = conds if target == "skill" else names
        for sp, seed in units:
            for m in models:
                run = runs[(target, sp, seed, names["sft" if m == "random" else m])]
                args = {"target": target, "supports": list(supports), "seed": seed, "random": m == "random",
                        "n": N_ITEMS[a.preset], "n_causal": N_CAUSAL[a.preset]}
                res = cached_json(run, "fig5", args, probe_run, run, target, supports, seed, m == "random",
                                  N_ITEMS[a.preset], N_CAUSAL[a.preset])
                tag = {"target": target, "split": sp, "seed": seed, "model": m, "run": run.name}
                probe += [{**tag, **r} for r in res["probe"]]
                causal += [{**tag, **r} for r in res["causal"]]
    return probe, causal


def models_of(rows: list[dict]) -> list[str]:
    """The models the rows hold, in FAIR_MODELS' order."""
    return [m for m in FAIR_MODELS if any(r["model"] == m for r in rows)]


def summarize(probe: list[dict], causal: list[dict]) -> list[dict]:
    out = []
    layers = list(dict.fromkeys(r["layer"] for r in probe))
    for target in dict.fromkeys(r["target"] for r in probe):
        for m in models_of(probe):
            for layer in layers:
                for ev in ("seen", "unseen"):
                    sel = [r for r in probe if r["target"] == target and r["model"] == m and r["layer"] == layer
                           and r["eval"] == ev]
                    for metric in ("ident", "selectivity", "acc", "control"):
                        mm, h, n = mean_ci([r[metric] for r in sel])
                        out.append({"what": "probe", "target": target, "model": m, "layer": layer, "eval": ev,
                                    "metric": metric, "mean": mm, "ci95": h, "n": n})
                sel = [r for r in causal if r["target"] == target and r["model"] == m and r["layer"] == layer
                       and m != "random"]
                for metric in ("interchange", "follow"):
                    per_unit = {}
                    for r in sel:  # average over steps t within a unit, then over units
                        per_unit.setdefault((r["split"], r["seed"]), []).append(r[metric])
                    vals = [np.nanmean(v) if np.isfinite(v).any() else float("nan")
                            for v in map(np.asarray, per_unit.values())]
                    mm, h, n = mean_ci(vals)
                    out.append({"what": "causal", "target": target, "model": m, "layer": layer, "eval": "unseen",
                                "metric": metric, "mean": mm, "ci95": h, "n": n})
    return out


def differences(probe: list[dict]) -> list[dict]:
    """GRPO minus every other trained model's identification score, paired within (split, seed) units,
    per target, layer and eval: does RL make the modules more identifiable than its references?"""
    out = []
    for target in dict.fromkeys(r["target"] for r in probe):
        for layer in dict.fromkeys(r["layer"] for r in probe):
            for ev in ("seen", "unseen"):
                sel = [dict(r, condition=r["model"]) for r in probe
                       if r["target"] == target and r["layer"] == layer and r["eval"] == ev]
                for ref in models_of(sel):
                    if ref not in ("rl", "random"):
                        m, h, n = paired(sel, "rl", ref, "ident")
                        out.append({"target": target, "layer": layer, "eval": ev, "model": "rl", "minus": ref,
                                    "diff_mean": m, "diff_ci95": h, "n": n})
    return out


DODGE = 0.07  # layers apart between the models' points at one layer, so that no interval hides another


def plot(summary: list[dict], stem: Path, subtitle: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r["layer"] for r in summary))
    panels = [("probe", "ident", "seen"), ("probe", "ident", "unseen"), ("probe", "selectivity", "unseen"),
              ("causal", "interchange", "unseen")]
    targets = list(dict.fromkeys(r["target"] for r in summary))
    # two panels to a row, so that a README's ~1,000 px leave each one readable
    fig, flat = panel_grid(len(targets) * len(panels), (4.8, 3.4), ncols=2)
    colors = {"random": "0.6", "sft": "tab:gray", "rl": "tab:blue", "control": "tab:green", "rft": "tab:cyan"}
    models = models_of(summary)
    n = max((r["n"] for r in summary), default=0)
    for i, target in enumerate(targets):
        for j, (what, metric, ev) in enumerate(panels):
            ax = flat[i * len(panels) + j]
            for k, m in enumerate(models):
                xs = np.arange(len(layers)) + (k - (len(models) - 1) / 2) * DODGE
                pts = [next(r for r in summary if r["what"] == what and r["target"] == target and r["model"] == m
                            and r["layer"] == layer and r["metric"] == metric and r["eval"] == ev)
                       for layer in layers]
                ys = np.array([p["mean"] for p in pts], float)
                hs = np.nan_to_num(np.array([p["ci95"] for p in pts], float))
                ax.errorbar(xs, ys, yerr=hs, color=colors[m], marker="o", ms=3, capsize=2,
                            label=LABELS[m], ls="--" if m == "random" else "-")
            ax.set_xticks(range(len(layers)), layers, fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel(metric)
            ax.set_ylim(-0.2 if metric == "selectivity" else 0, 1.02)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{target}: {metric} ({ev} compositions)", fontsize=10)
    fig.suptitle("Probes per layer: identification score (>= 0.9: identified), selectivity, causal interchange\n"
                 f"{subtitle}{interval_note(n)}", fontsize=11)
    fig.tight_layout()
    legend_below(fig, len(models))
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig5", __doc__, protocol.PRESETS)
    ap.add_argument("--targets", nargs="+", default=None, choices=list(TASKS),
                    help="what to probe (default: both; with --fair: skill, its only target)")
    ap.add_argument("--fair", default=None, metavar="FAIR_CSV",
                    help="probe the skills of a fair-test study's runs (its fair.csv; --runs: its run cache)")
    a = ap.parse_args(argv)
    if a.fair and a.targets not in (None, ["skill"]):
        ap.error(f"--targets {' '.join(a.targets)}: --fair probes the skill target only")
    if a.fair and not Path(a.fair).is_file():
        ap.error(f"--fair {a.fair}: no such file (experiments.fair writes fair.csv)")
    a.targets = a.targets or (["skill"] if a.fair else list(TASKS))
    subtitle, fair = "", None
    if a.fair:
        from experiments import regime
        from probes.report import run_data

        try:
            runs, at, cond = fair_runs(a.fair, a.runs, [(sp, s) for sp in a.splits for s in a.seeds])
        except ValueError as e:
            ap.error(str(e))
        fair = runs, at
        if run_data(runs[("skill", *at[0], FAIR_ARMS["sft"])])[1] == "answer":
            ap.error(f"--fair {a.fair}: regime {cond} trains answer-only traces: no step position to probe")
        if a.out is None:  # beside the study's figures, never over the protocol's fig5
            a.out = str(output_dir(None, a.preset) / ("" if cond == regime.CHOSEN else cond) / "fair_probes")
        subtitle = f"fair-test runs, regime {cond}, units at plateau; "
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    probe, causal = collect(a, fair)
    summary = summarize(probe, causal)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(summary, out / "fig5.csv")
    write_csv(probe, out / "fig5_probes.csv")
    write_csv(causal, out / "fig5_causal.csv")
    diffs = differences(probe)
    write_csv(diffs, out / "fig5_differences.csv")
    plot(summary, out / "fig5", subtitle)
    write_json({"figure": "fig5", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "n_items_per_support": N_ITEMS[a.preset],
                "n_causal": N_CAUSAL[a.preset], "tasks": {"skill": FAIR_ARMS} if a.fair else TASKS,
                "subtitle": subtitle,
                "runs": sorted({r["run"] for r in probe}), "summary": summary, "differences": diffs},
               out / "fig5.json")
    for r in summary:
        if r["metric"] in ("ident", "interchange") and r["eval"] == "unseen":
            print(f"{r['target']:>8} {LABELS[r['model']]:>22} {r['layer']:>7} {r['what']:>6} {r['metric']:>11}: "
                  f"{r['mean']:.3f} ± {r['ci95']:.3f}")
    last = list(dict.fromkeys(r["layer"] for r in probe))[-1]  # the last layer: what the policy predicts from
    for d in diffs:
        if d["layer"] == last:
            print(f"{d['target']:>8} {d['layer']:>7} {d['eval']:>6} ident: GRPO − {LABELS[d['minus']]:<22} "
                  f"{d['diff_mean']:+.3f} ± {d['diff_ci95']:.3f} (n = {d['n']})")
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig5.png'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
