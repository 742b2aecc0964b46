"""Figure 1 and Table 1 (Finding 1): RL gains over SFT on seen vs unseen compositions, and by depth.

    python -m experiments.fig1 [--preset tiny|smoke|cpu|...] [--seeds 0 1 2] [--splits 0 1] [--out paper_figures]

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
ours. Every number is a mean over units with a 95% t-interval. ``--replot`` only re-draws
``fig1.png`` / ``.pdf`` from the ``fig1.csv`` in ``--out``: nothing is trained or evaluated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from experiments import protocol
from experiments.engine import deeper_accuracy, deeper_split, parallel
from experiments.report import (
    COMMITTED,
    figure_parser,
    interval_note,
    legend_below,
    mean_ci,
    output_dir,
    paired,
    pm,
    provenance,
    read_csv,
    save_figure,
    write_csv,
    write_json,
)
from experiments.runs import posthoc_eval
from hlsm.names import EVAL_ATOMS, SEEN, UNSEEN

CONDITIONS = ("sft", "grpo", "grpo_atoms", "control", "control_atoms")
LABELS = {"sft": "SFT", "grpo": "SFT + RL, compound traces", "grpo_atoms": "SFT + RL, atomic modules",
          "control": "SFT + labelled SFT on the compound RL prompts (control of RL compounds)",
          "control_atoms": "SFT + labelled SFT on the atom RL prompts (control of RL atoms)"}
# The paper's Table 1 (OOD compound traces at L = 4, L_train = 3), restated in docs/design.md §paper
PAPER_TABLE1 = {"sft": 4.8, "grpo_atoms": 14.8, "grpo": 42.6}
TABLE1 = ("sft", "grpo_atoms", "grpo", "control_atoms", "control")  # the paper's order, then the controls
# paired differences Table 1 reports: RL against SFT, compounds against atoms, each RL arm against its control
CLAIMS = (("grpo", "sft"), ("grpo_atoms", "sft"), ("grpo", "grpo_atoms"), ("grpo", "control"),
          ("grpo_atoms", "control_atoms"), ("control", "sft"))


def unit_rows(cfg: protocol.StudyConfig, rows: list[dict]) -> list[dict]:
    """One row per unit x condition: accuracy on atoms (L = 1), seen and unseen at L_train, and by
    deeper depth L_train + 1, + 2 (``acc/<support>``, ``acc/L<depth>``), every run on the same items."""
    p = protocol.PRESETS[cfg.preset]
    depth = p["split"]["depth"]
    acc = {(r["split"], r["seed"], r["condition"]): (r["run"], {}) for r in rows}
    for r in rows:
        acc[(r["split"], r["seed"], r["condition"])][1][r["support"]] = r["accuracy"]
    jobs = [(key, (Path(cfg.runs) / run, deeper_split(dict(p["split"], partition_seed=key[0])),
                   p["sft"]["eval_n"], p["n_deeper"], key[1])) for key, (run, _) in sorted(acc.items())]
    results = parallel(_depths, [a for _, a in jobs], cfg.workers)
    out = []
    for ((sp, seed, cond), _), (atoms, deeper) in zip(jobs, results):
        got = acc[(sp, seed, cond)][1]
        out.append({"split": sp, "seed": seed, "condition": cond, f"acc/{EVAL_ATOMS}": atoms,
                    f"acc/{SEEN}": got[SEEN], f"acc/{UNSEEN}": got[UNSEEN],
                    **{f"acc/L{d}": deeper[d] for d in (depth + 1, depth + 2)}})
    return out


def _depths(run, split, n, n_deeper, seed):
    atoms = next(float(r["answer"]) for r in posthoc_eval(run, split, (EVAL_ATOMS,), n, seed, by=("all",)))
    return atoms, deeper_accuracy(run, split, n_deeper, seed)


def plotted_rows(urows: list[dict], depth: int) -> list[dict]:
    """Every number fig1 plots: gains over SFT at L_train, accuracy and gain by depth (mean, 95% t)."""
    plotted = []
    sets = [(1, "atoms", f"acc/{EVAL_ATOMS}"), (depth, "unseen", f"acc/{UNSEEN}"),
            (depth + 1, "deeper", f"acc/L{depth + 1}"), (depth + 2, "deeper", f"acc/L{depth + 2}")]
    for cond in CONDITIONS:
        for s in ("seen", "unseen"):
            m, h, n = paired(urows, cond, "sft", f"acc/{s}") if cond != "sft" else (0.0, 0.0, 0)
            plotted.append({"panel": "gain_at_Ltrain", "condition": cond, "set": s, "depth": depth,
                            "mean": m, "ci95": h, "n": n})
        for d, s, key in sets:
            m, h, n = mean_ci([r[key] for r in urows if r["condition"] == cond])
            plotted.append({"panel": "accuracy_by_depth", "condition": cond, "set": s, "depth": d,
                            "mean": m, "ci95": h, "n": n})
            if cond != "sft":
                m, h, n = paired(urows, cond, "sft", key)
                plotted.append({"panel": "gain_by_depth", "condition": cond, "set": s, "depth": d,
                                "mean": m, "ci95": h, "n": n})
    return plotted


def table1(urows: list[dict], depth: int) -> tuple[list[dict], str]:
    """Table 1: accuracy per setting on seen / unseen L_train and L_train + 1, + 2, and the paired
    differences of ``CLAIMS`` (mean ± 95% t-interval over units), beside the paper's L = 4 numbers.
    ``urows``: one row per unit x condition with ``split``, ``seed``, ``condition`` and ``acc/...``."""
    sets = [(f"acc/{SEEN}", f"seen L={depth}"), (f"acc/{UNSEEN}", f"unseen L={depth}"),
            (f"acc/L{depth + 1}", f"L={depth + 1}"), (f"acc/L{depth + 2}", f"L={depth + 2}")]
    out = []
    lines = ["| setting | paper, L=4 | " + " | ".join(n for _, n in sets) + " |", "|---|---|" + "---|" * len(sets)]
    for kind in TABLE1:
        vals = [mean_ci([r.get(k) for r in urows if r["condition"] == kind]) for k, _ in sets]
        if not any(n for _, _, n in vals):
            continue
        paper = PAPER_TABLE1.get(kind)
        out.append({"setting": kind, "label": LABELS[kind], "paper_accuracy_pct": paper,
                    **{name: m for (_, name), (m, _, _) in zip(sets, vals)},
                    **{f"{name} ci95": h for (_, name), (_, h, _) in zip(sets, vals)}, "n": vals[0][2]})
        lines.append(f"| {LABELS[kind]} | {'—' if paper is None else paper} | "
                     + " | ".join(pm(m, h) for m, h, _ in vals) + " |")
    lines += ["", "| paired difference | paper, L=4 | " + " | ".join(n for _, n in sets) + " |",
              "|---|---|" + "---|" * len(sets)]
    for a, b in CLAIMS:
        diffs = [paired(urows, a, b, k) for k, _ in sets]
        if not any(n for _, _, n in diffs):
            continue
        paper = round(PAPER_TABLE1[a] - PAPER_TABLE1[b], 1) if a in PAPER_TABLE1 and b in PAPER_TABLE1 else None
        # (on a difference row the paper column holds the paper's difference, in points)
        out.append({"setting": f"{a} - {b}", "label": f"{LABELS[a]} minus {LABELS[b]}", "paper_accuracy_pct": paper,
                    **{name: m for (_, name), (m, _, _) in zip(sets, diffs)},
                    **{f"{name} ci95": h for (_, name), (_, h, _) in zip(sets, diffs)}, "n": diffs[0][2]})
        lines.append(f"| `{a}` − `{b}` | {'—' if paper is None else f'{paper:+.1f}'} | "
                     + " | ".join(pm(m, h, "+") for m, h, _ in diffs) + " |")
    n = out[0]["n"] if out else 0
    spread = "1 unit (split x seed), no interval" if n == 1 else f"mean ± 95% t-interval over {n} units (split x seed)"
    lines.append(f"\nAccuracy in %, {spread}; differences paired within units. The paper's L = 4 is our "
                 f"L = {depth + 1} (L_train + 1).")
    return out, "\n".join(lines) + "\n"


# short names for ticks and the shared legend (LABELS, the long ones, go into the tables)
SHORT = {"sft": "SFT", "grpo": "+RL, compound traces", "grpo_atoms": "+RL, atoms",
         "control": "+labelled SFT, compound RL prompts (control)",
         "control_atoms": "+labelled SFT, atom RL prompts (control)"}
TICKS = {"sft": "SFT", "grpo": "+RL\ncompound", "grpo_atoms": "+RL\natoms", "control": "+labelled\ncompound",
         "control_atoms": "+labelled\natoms"}
COLORS = {"sft": "0.5", "grpo": "tab:blue", "grpo_atoms": "tab:orange", "control": "tab:green",
          "control_atoms": "tab:olive"}
# what the paper's numbers are called on the figure (docs/design.md §paper: its Table 1, L = 4, L_train = 3)
PAPER_DEPTH = 4  # the depth of the paper's Table 1 (its L_train = 3)
PAPER_LABEL = f"paper (a pretrained LLM), its Table 1 at L = {PAPER_DEPTH}"
FIGSIZE = (13, 4.6)  # inches; 1,690 px at save_figure's 130 dpi, read at ~1,000 px in a README
FONT = 11  # points, ticks and labels; titles one point larger
DODGE = 0.08  # depth units between the conditions' points at one depth (right panel)


def _row(plotted: list[dict], panel: str, cond: str, **where) -> dict:
    return next(p for p in plotted if p["panel"] == panel and p["condition"] == cond
                and all(p[k] == v for k, v in where.items()))


def _err(ci95: float) -> float:
    """An error bar in points; NaN, which matplotlib leaves undrawn (no cap either), where one unit
    gives no interval."""
    return 100 * ci95


def _top(r: dict) -> float:
    """The top of a bar with its error bar, in points (the bar alone when it has none)."""
    return 100 * r["mean"] + (100 * r["ci95"] if r["ci95"] == r["ci95"] else 0.0)


def plot(plotted: list[dict], depth: int, stem: Path) -> None:
    """The three panels of ``plotted`` (``plotted_rows``) with one legend under them; the paper's
    numbers as hatched bars beside ours where it reports one (the middle panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = max((p["n"] for p in plotted), default=0)
    with plt.rc_context({"font.size": FONT, "axes.titlesize": FONT + 1}):
        fig, axes = plt.subplots(1, 3, figsize=FIGSIZE, gridspec_kw={"width_ratios": (1, 1.4, 1.1)})
        conds = [c for c in CONDITIONS if c != "sft"]
        ax = axes[0]
        width = 0.8 / len(conds)
        for i, s in enumerate(("seen", "unseen")):
            for j, c in enumerate(conds):
                r = _row(plotted, "gain_at_Ltrain", c, set=s)
                ax.bar(i + (j - (len(conds) - 1) / 2) * width, 100 * r["mean"], width * 0.9,
                       yerr=_err(r["ci95"]), color=COLORS[c], capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        if all(p["mean"] == 0 for p in plotted if p["panel"] == "gain_at_Ltrain"):
            # zero-height bars draw nothing: say so, or the panel reads as empty
            ax.text(0.5, 0.75, "every gain is 0.0 points", transform=ax.transAxes, ha="center")
        ax.set_xticks([0, 1], [f"seen\n(L = {depth})", f"unseen\n(L = {depth})"])
        ax.set_ylabel("accuracy gain over SFT (points)")
        ax.set_title(f"gain at L_train = {depth}")

        ax = axes[1]  # ours and, beside it, the paper's where it reports the setting
        for j, c in enumerate(CONDITIONS):
            r = _row(plotted, "accuracy_by_depth", c, depth=depth + 1)
            paper = PAPER_TABLE1.get(c)
            x = j - 0.2 if paper is not None else j
            ax.bar(x, 100 * r["mean"], 0.4, yerr=_err(r["ci95"]), color=COLORS[c], capsize=3)
            ax.annotate(f"{100 * r['mean']:.1f}", (x, _top(r)), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=FONT - 2)
            if paper is not None:
                ax.bar(j + 0.2, paper, 0.4, color="white", edgecolor=COLORS[c], hatch="//", lw=1.2)
                ax.annotate(f"{paper:.1f}", (j + 0.2, paper), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=FONT - 2)
        ax.set_xticks(range(len(CONDITIONS)), [TICKS[c] for c in CONDITIONS], fontsize=FONT - 2)
        ax.set_ylabel("accuracy (%)")
        tops = [_top(p) for p in plotted
                if p["panel"] == "accuracy_by_depth" and p["depth"] == depth + 1 and p["mean"] == p["mean"]]
        ax.set_ylim(0, 1.15 * max(tops + list(PAPER_TABLE1.values())))  # room for the value labels
        ax.set_title(f"compound traces one step deeper, L = {depth + 1}"
                     + ("" if depth + 1 == PAPER_DEPTH else f"\n(the paper's bars: its L = {PAPER_DEPTH})"))

        ax = axes[2]
        for j, c in enumerate(conds):
            rs = sorted((p for p in plotted if p["panel"] == "gain_by_depth" and p["condition"] == c),
                        key=lambda p: p["depth"])
            dodge = (j - (len(conds) - 1) / 2) * DODGE  # side by side, so the intervals do not hide each other
            ax.errorbar([p["depth"] + dodge for p in rs], [100 * p["mean"] for p in rs],
                        [_err(p["ci95"]) for p in rs], color=COLORS[c], marker="o", capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([1, depth, depth + 1, depth + 2], ["1\natoms", f"{depth}\nunseen", str(depth + 1),
                                                         str(depth + 2)])
        ax.set_xlabel("composition depth L")
        ax.set_ylabel("accuracy gain over SFT (points)")
        ax.set_title("gain by depth")

        handles = [Patch(color=COLORS[c], label=SHORT[c]) for c in CONDITIONS]
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="//", label=PAPER_LABEL))
        fig.suptitle(f"Finding 1. Ours: {interval_note(n)}. Hatched: the paper's Table 1",
                     fontsize=FONT + 1)
        fig.tight_layout()
        legend_below(fig, 3, handles)
        save_figure(fig, stem)
        plt.close(fig)


def read_plotted(path: Path) -> list[dict]:
    """``fig1.csv`` back as ``plotted_rows`` gave it: numbers as numbers (the CSV holds them in full)."""
    return [dict(r, depth=int(r["depth"]), mean=float(r["mean"]), ci95=float(r["ci95"]), n=int(r["n"]))
            for r in read_csv(path)]


def replot(out: Path) -> int:
    """Re-draw ``out/fig1.{png,pdf}`` from ``out/fig1.csv`` alone: no run, no evaluation, no number
    changed (the CSV and JSON stay as they are). The preset, for the non-committed mark, is the
    one ``out/fig1.json`` records."""
    meta = json.loads((out / "fig1.json").read_text()) if (out / "fig1.json").exists() else {}
    output_dir(str(out), meta.get("args", {}).get("preset", "cpu"))
    plotted = read_plotted(out / "fig1.csv")
    depth = next(p["depth"] for p in plotted if p["panel"] == "gain_at_Ltrain")
    plot(plotted, depth, out / "fig1")
    print(f"re-drawn from {out / 'fig1.csv'} -> {out / 'fig1.png'}")
    return 0


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig1", __doc__, protocol.PRESETS)
    ap.add_argument("--replot", action="store_true",
                    help="only re-draw fig1.png/.pdf from the fig1.csv in --out (default paper_figures/); "
                         "trains and evaluates nothing")
    a = ap.parse_args(argv)
    if a.replot:
        return replot(Path(a.out) if a.out else COMMITTED)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    cfg = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo", "grpo_atoms"), "core",
                               a.workers, a.runs, a.out)
    rows = protocol.run_study(cfg)
    depth = protocol.PRESETS[a.preset]["split"]["depth"]
    urows = unit_rows(cfg, rows)
    plotted = plotted_rows(urows, depth)
    table, md = table1(urows, depth)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(plotted, out / "fig1.csv")
    write_csv(urows, out / "fig1_units.csv")
    write_csv(table, out / "table1.csv")
    (out / "table1.md").write_text(md)
    plot(plotted, depth, out / "fig1")
    unit = protocol.unit_configs(cfg, cfg.splits[0], cfg.seeds[0])
    write_json({"figure": "fig1", "args": vars(a), "seeds": a.seeds, "splits": a.splits,
                "wall_s": time.time() - t0, "provenance": provenance(), "runs": sorted({r["run"] for r in rows}),
                "configs_of_first_unit": {k: [kind, c.to_dict()] for k, (kind, c) in unit.items()},
                "plotted": plotted, "table1": table}, out / "fig1.json")
    print(md)
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig1.png'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
