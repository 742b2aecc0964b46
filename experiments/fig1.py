"""Figure 1 and Table 1 (Finding 1): RL gains over SFT on seen vs unseen compositions, and by depth.

    python -m experiments.fig1 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0 1] [--out paper_figures]

The runs are the protocol study's (``experiments.protocol``; same configs, so the same cached
runs): per (composition split, seed) unit an SFT base, GRPO from it on compositions beyond the
SFT support (``grpo``: RL on compound traces), GRPO on atoms only (``grpo_atoms``), and the
labelled control of each GRPO run (continued SFT on exactly its RL prompts: ``control``,
``control_atoms``). Each run is then scored at every depth L = 1 .. L_train + 2 on the same items
(``eval_atoms`` at L = 1, held-out ``unseen`` compositions at L_train, all compositions at deeper
L, none of which any run trained on).

Panels: (left) gain over SFT at L_train on seen vs unseen compositions; (middle) accuracy on
compound traces one step deeper than training (the paper's OOD L = 4 with L_train = 3; ours is
L_train + 1); (right) gain over SFT by depth. ``table1.{csv,md}`` puts the paper's numbers beside
ours. Every number is a mean over units with a 95% t-interval.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from experiments import protocol
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
from experiments.runs import posthoc_eval
from hlsm.names import DEEPER, EVAL_ATOMS, SEEN, UNSEEN

CONDITIONS = ("sft", "grpo", "grpo_atoms", "control", "control_atoms")
LABELS = {"sft": "SFT", "grpo": "SFT + RL, compound traces", "grpo_atoms": "SFT + RL, atomic modules",
          "control": "SFT + labelled SFT on the compound RL prompts (control of RL compounds)",
          "control_atoms": "SFT + labelled SFT on the atom RL prompts (control of RL atoms)"}
# The paper's Table 1 (OOD compound traces at L = 4, L_train = 3), restated in docs/design.md §paper
PAPER_TABLE1 = {"sft": 4.8, "grpo_atoms": 14.8, "grpo": 42.6}


def depth_rows(cfg: protocol.StudyConfig, rows: list[dict]) -> list[dict]:
    """Per unit x condition x depth: accuracy (L=1 atoms, L_train seen & unseen, deeper by depth)."""
    spec = protocol.PRESETS[cfg.preset]["split"]
    depth = spec["depth"]
    n = protocol.PRESETS[cfg.preset]["sft"]["eval_n"]
    runs = {(r["split"], r["seed"], r["condition"]): r["run"] for r in rows}
    jobs = []
    for (sp, seed, cond), run in sorted(runs.items()):
        split = dict(spec, partition_seed=sp, deeper=[depth + 1, depth + 2])
        jobs.append(((sp, seed, cond), (Path(cfg.runs) / run, split, (EVAL_ATOMS, SEEN, UNSEEN, DEEPER), n,
                                        seed)))
    workers = cfg.workers or 2
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_posthoc, [a for _, a in jobs]))
    else:
        results = [_posthoc(a) for _, a in jobs]
    out = []
    for ((sp, seed, cond), _), evals in zip(jobs, results):
        acc = {}
        for r in evals:
            if r["by"] == "all" and r["support"] in (EVAL_ATOMS, SEEN, UNSEEN):
                acc[r["support"]] = float(r["answer"])
            if r["by"] == "depth" and r["support"] == "deeper":
                acc[f"L{r['group']}"] = float(r["answer"])
        base = {"split": sp, "seed": seed, "condition": cond}
        out.append({**base, "depth": 1, "set": "atoms", "accuracy": acc[EVAL_ATOMS]})
        out.append({**base, "depth": depth, "set": "seen", "accuracy": acc["seen"]})
        out.append({**base, "depth": depth, "set": "unseen", "accuracy": acc["unseen"]})
        for L in (depth + 1, depth + 2):
            out.append({**base, "depth": L, "set": "deeper", "accuracy": acc[f"L{L}"]})
    return out


def _posthoc(args):
    return posthoc_eval(*args)


def tables(drows: list[dict], depth: int) -> tuple[list[dict], list[dict]]:
    """(every plotted number, table 1 rows)."""
    plotted = []

    def sel(d, s):
        return [dict(r, **{"value": r["accuracy"]}) for r in drows if r["depth"] == d and r["set"] == s]

    for cond in CONDITIONS:
        for s, d in (("seen", depth), ("unseen", depth)):
            m, h, n = paired(sel(d, s), cond, "sft", "value") if cond != "sft" else (0.0, 0.0, 0)
            plotted.append({"panel": "gain_at_Ltrain", "condition": cond, "set": s, "depth": d,
                            "mean": m, "ci95": h, "n": n})
        for d, s in [(1, "atoms"), (depth, "unseen"), (depth + 1, "deeper"), (depth + 2, "deeper")]:
            m, h, n = mean_ci([r["accuracy"] for r in sel(d, s) if r["condition"] == cond])
            plotted.append({"panel": "accuracy_by_depth", "condition": cond, "set": s, "depth": d,
                            "mean": m, "ci95": h, "n": n})
            if cond != "sft":
                m, h, n = paired(sel(d, s), cond, "sft", "value")
                plotted.append({"panel": "gain_by_depth", "condition": cond, "set": s, "depth": d,
                                "mean": m, "ci95": h, "n": n})
    table = []
    deeper = sel(depth + 1, "deeper")
    for cond in ("sft", "grpo_atoms", "grpo", "control_atoms", "control"):
        m, h, n = mean_ci([r["accuracy"] for r in deeper if r["condition"] == cond])
        g = paired(deeper, cond, "sft", "value") if cond != "sft" else (float("nan"),) * 3
        paper = PAPER_TABLE1.get(cond)
        table.append({"setting": LABELS[cond], "paper_L": 4, "paper_accuracy_pct": paper,
                      "paper_gain_pct": None if paper is None or cond == "sft" else round(paper - 4.8, 1),
                      "ours_L": depth + 1, "ours_accuracy_pct": 100 * m, "ours_ci95_pct": 100 * h,
                      "ours_gain_pct": 100 * g[0], "ours_gain_ci95_pct": 100 * g[1], "n_units": n})
    adv = paired(deeper, "grpo", "grpo_atoms", "value")
    table.append({"setting": "compound advantage (compound - atomic RL)", "paper_L": 4,
                  "paper_accuracy_pct": None, "paper_gain_pct": 27.8, "ours_L": depth + 1,
                  "ours_accuracy_pct": None, "ours_ci95_pct": None, "ours_gain_pct": 100 * adv[0],
                  "ours_gain_ci95_pct": 100 * adv[1], "n_units": adv[2]})
    return plotted, table


def table_md(table: list[dict]) -> str:
    def f(v, pct=True):
        return "—" if v is None or v != v else (f"{v:.1f}" if pct else str(v))

    lines = ["| setting | paper (L=4) | paper gain | ours (L=L_train+1) | ours gain over SFT |",
             "|---|---|---|---|---|"]
    for r in table:
        ours = "—" if r["ours_accuracy_pct"] is None else f"{r['ours_accuracy_pct']:.1f} ± {f(r['ours_ci95_pct'])}"
        gain = "—" if r["ours_gain_pct"] != r["ours_gain_pct"] else \
            f"{r['ours_gain_pct']:+.1f} ± {f(r['ours_gain_ci95_pct'])}"
        lines.append(f"| {r['setting']} | {f(r['paper_accuracy_pct'])} | {f(r['paper_gain_pct'])} | {ours} | {gain} |")
    return "\n".join(lines) + "\n\nAccuracies in %, mean ± 95% t-interval over (split, seed) units.\n"


def plot(plotted: list[dict], depth: int, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sft": "0.5", "grpo": "tab:blue", "grpo_atoms": "tab:orange", "control": "tab:green",
              "control_atoms": "tab:olive"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    conds = [c for c in CONDITIONS if c != "sft"]
    for i, s in enumerate(("seen", "unseen")):
        for j, c in enumerate(conds):
            r = next(p for p in plotted if p["panel"] == "gain_at_Ltrain" and p["condition"] == c and p["set"] == s)
            ax.bar(i + (j - 1.5) * 0.2, 100 * r["mean"], 0.18, yerr=100 * r["ci95"], color=colors[c], capsize=3,
                   label=LABELS[c] if i == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks([0, 1], [f"seen (L={depth})", f"unseen (L={depth})"])
    ax.set_ylabel("accuracy gain over SFT (points)")
    ax.set_title("RL gain at L_train")
    ax.legend(fontsize=7)
    ax = axes[1]
    for j, c in enumerate(CONDITIONS):
        r = next(p for p in plotted if p["panel"] == "accuracy_by_depth" and p["condition"] == c
                 and p["depth"] == depth + 1)
        ax.bar(j, 100 * r["mean"], 0.6, yerr=100 * r["ci95"], color=colors[c], capsize=3)
    ax.set_xticks(range(len(CONDITIONS)), ["SFT", "+RL compound", "+RL atoms", "+labelled\ncompounds",
                                           "+labelled\natoms"], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"OOD compound traces, L = {depth + 1}")
    ax = axes[2]
    for c in conds:
        rs = sorted((p for p in plotted if p["panel"] == "gain_by_depth" and p["condition"] == c),
                    key=lambda p: p["depth"])
        ax.errorbar([p["depth"] for p in rs], [100 * p["mean"] for p in rs], [100 * p["ci95"] for p in rs],
                    color=colors[c], marker="o", capsize=3, label=LABELS[c])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks([1, depth, depth + 1, depth + 2])
    ax.set_xlabel("composition depth L (1: atoms; L_train: unseen compositions)")
    ax.set_ylabel("accuracy gain over SFT (points)")
    ax.set_title("gain by depth")
    fig.suptitle("Finding 1: mean over (split, seed) units, 95% t-intervals", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig1", __doc__)
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    cfg = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo", "grpo_atoms"), "core",
                               a.workers, a.runs, a.out)
    rows = protocol.run_study(cfg)
    depth = protocol.PRESETS[a.preset]["split"]["depth"]
    drows = depth_rows(cfg, rows)
    plotted, table = tables(drows, depth)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(plotted, out / "fig1.csv")
    write_csv(drows, out / "fig1_units.csv")
    write_csv(table, out / "table1.csv")
    (out / "table1.md").write_text(table_md(table))
    plot(plotted, depth, out / "fig1")
    unit = protocol.unit_configs(cfg, cfg.splits[0], cfg.seeds[0])
    write_json({"figure": "fig1", "args": vars(a), "seeds": a.seeds, "splits": a.splits,
                "wall_s": time.time() - t0, "provenance": provenance(), "runs": sorted({r["run"] for r in rows}),
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in unit.items()},
                "plotted": plotted, "table1": table}, out / "fig1.json")
    print(table_md(table))
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig1.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
