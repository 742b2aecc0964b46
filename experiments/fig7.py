"""Figure 7 (reward design, seed 003): outcome-only vs composite structural reward in GRPO.

    python -m experiments.fig7 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0 1]

The protocol study's runs (same configs, same cache): ``grpo`` (reward = exact answer) and
``grpo_structure`` (0.5 exact answer + 0.5 ``hlsm.text`` structure reward: credit per correct
trace step), beside the SFT base and the labelled control. Each run is re-scored (cached) on
unseen compositions at L_train, the RL prompts' compositions and deeper traces (L_train + 1) for
the answer, the per-step trace accuracy and the rate of *right answer, wrong trace* (what an
outcome-only reward cannot see). Mean over (split, seed) units with 95% t-intervals; the claim's
comparison is the paired difference composite − outcome.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments import protocol
from experiments.report import (
    figure_parser,
    grpo_regime,
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
from experiments.runs import posthoc_eval

CONDITIONS = ("sft", "control", "grpo", "grpo_structure")
LABELS = {"sft": "SFT base", "control": "labelled control", "grpo": "GRPO, outcome reward",
          "grpo_structure": "GRPO, composite reward"}
SETS = ("unseen", "rl_prompts", "deeper")
METRICS = ("answer", "step", "right_answer_wrong_trace")


def score_runs(rows: list[dict], runs: str, preset: str) -> list[dict]:
    """One row per unit x condition x set with the three metrics, from cached post-hoc evaluations."""
    out = []
    n = protocol.PRESETS[preset]["grpo"]["eval_n"]
    for r in rows:
        if r["support"] != "unseen" or r["condition"] not in CONDITIONS:
            continue  # one row per run
        spec = dict(protocol.PRESETS[preset]["split"], partition_seed=r["split"])
        spec["deeper"] = [spec["depth"] + 1]  # L_train + 1 only (the task's own deeper support pools L + 1, + 2)
        ev = posthoc_eval(Path(runs) / r["run"], spec, SETS, n=n, seed=r["seed"], by=("all",))
        for e in ev:
            out.append({"split": r["split"], "seed": r["seed"], "condition": r["condition"], "set": e["support"],
                        **{m: float(e[m]) for m in METRICS}, "run": r["run"]})
    return out


def summarize(scored: list[dict]) -> list[dict]:
    out = []
    for c in CONDITIONS:
        for s in SETS:
            sel = [r for r in scored if r["set"] == s]
            row = {"condition": c, "set": s}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_ci95"], row["n"] = mean_ci([r[m] for r in sel if r["condition"] == c])
                d = paired(sel, c, "grpo", m) if c != "grpo" else (0.0, 0.0, 0)
                row[f"{m}_minus_outcome"], row[f"{m}_minus_outcome_ci95"] = d[0], d[1]
                ref = protocol.CONTROL_OF.get(c, c)  # a GRPO run's labelled control (both share one)
                d = paired(sel, c, ref, m) if ref != c else (0.0, 0.0, 0)
                row[f"{m}_minus_control"], row[f"{m}_minus_control_ci95"] = d[0], d[1]
            out.append(row)
    return out


def plot(summary: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("answer", "unseen", "answer accuracy, unseen (L_train)"),
              ("answer", "deeper", "answer accuracy, deeper (L_train + 1)"),
              ("step", "unseen", "trace-step accuracy, unseen"),
              ("right_answer_wrong_trace", "unseen", "right answer, wrong trace: unseen"),
              ("right_answer_wrong_trace", "rl_prompts", "right answer, wrong trace: RL compositions")]
    fig, axes = panel_grid(len(panels), (4.2, 3.4))  # three to a row: readable ~1,000 px wide
    cmap = plt.get_cmap("tab10")
    for ax, (m, s, title) in zip(axes, panels):
        rs = [next(r for r in summary if r["condition"] == c and r["set"] == s) for c in CONDITIONS]
        ax.bar(range(len(CONDITIONS)), [100 * r[f"{m}_mean"] for r in rs],
               yerr=[0 if r[f"{m}_ci95"] != r[f"{m}_ci95"] else 100 * r[f"{m}_ci95"] for r in rs], capsize=2,
               color=[cmap(i) for i in range(len(CONDITIONS))],
               label=[LABELS[c] for c in CONDITIONS])
        ax.set_xticks([])  # the bars are named once, in the legend under the figure
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("%")
    n = max((r["n"] for r in summary), default=0)
    fig.suptitle(f"Reward design: outcome-only vs composite structural reward; {interval_note(n)}", fontsize=11)
    fig.tight_layout()
    legend_below(fig, len(CONDITIONS))
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    a = figure_parser("python -m experiments.fig7", __doc__, protocol.PRESETS).parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    study = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo", "grpo_structure"), "core",
                                 a.workers, a.runs, a.out)
    rows = protocol.run_study(study)
    scored = score_runs(rows, a.runs, a.preset)
    summary = summarize(scored)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(summary, out / "fig7.csv")
    write_csv(scored, out / "fig7_units.csv")
    plot(summary, out / "fig7")
    write_json({"figure": "fig7", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "runs": sorted({r["run"] for r in scored}),
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in
                                          protocol.unit_configs(study, a.splits[0], a.seeds[0]).items()},
                "plotted": summary}, out / "fig7.json")
    for r in summary:
        print(f"{LABELS[r['condition']]:>24} {r['set']:>10}: " + "  ".join(
            f"{m} {100 * r[f'{m}_mean']:5.1f} ± {100 * r[f'{m}_ci95']:.1f} "
            f"(vs outcome {100 * r[f'{m}_minus_outcome']:+.1f} ± {100 * r[f'{m}_minus_outcome_ci95']:.1f}, "
            f"vs control {100 * r[f'{m}_minus_control']:+.1f} ± {100 * r[f'{m}_minus_control_ci95']:.1f})"
            for m in METRICS))
    # one row per (unit, GRPO condition): the protocol rows repeat its stats once per support
    per_unit = [r for r in rows if r["condition"] in ("grpo", "grpo_structure") and r["support"] == "unseen"]
    for g in grpo_regime(per_unit):
        print(f"{LABELS[g['condition']]:>24} regime: first-step reward {100 * g['reward_first']:.1f} ± "
              f"{100 * g['reward_first_ci95']:.1f}%, tied groups {100 * g['zero_std_frac']:.1f} ± "
              f"{100 * g['zero_std_frac_ci95']:.1f}%")
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig7.png'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
