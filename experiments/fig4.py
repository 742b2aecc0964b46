"""Figure 4 (Finding 4): how the SFT and RL data distributions relate matters.

    python -m experiments.fig4 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0 1] [--bottom-splits 0]

(top) RL *beyond* the SFT support (``grpo``: GRPO on compositions SFT never showed) vs RL
*inside* it (``grpo_inside``: GRPO on the SFT compositions, fresh inputs), beside the SFT base
and each RL run's labelled control (``control``, ``control_inside``), on held-out unseen
compositions, the RL prompts' compositions and the seen ones. (bottom) SFT that covers the
atomic inventory through compositional traces only (``sft_compounds``) vs through atomic L = 1
traces only (``sft_atoms``), each followed by the same GRPO on compositions beyond its support
(and its labelled control): accuracy on unseen compositions before and after RL. The runs are
the protocol study's (same configs, same cache).
Every number is a mean over (split, seed) units with a 95% t-interval.
"""

from __future__ import annotations

import time
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

TOP = ("sft", "grpo_inside", "control_inside", "grpo", "control")
BOTTOM = ("sft_compounds", "sft_compounds+grpo", "sft_compounds+control", "sft_atoms", "sft_atoms+grpo",
          "sft_atoms+control")
LABELS = {"sft": "SFT", "grpo_inside": "+RL inside SFT support", "grpo": "+RL beyond SFT support",
          "control": "+labelled SFT on the RL prompts beyond",
          "control_inside": "+labelled SFT on the RL prompts inside",
          "sft_compounds": "SFT: compound traces",
          "sft_compounds+grpo": "compound SFT + RL", "sft_compounds+control": "compound SFT + labelled control",
          "sft_atoms": "SFT: atomic traces", "sft_atoms+grpo": "atomic SFT + RL",
          "sft_atoms+control": "atomic SFT + labelled control"}
SETS = ("unseen", "rl_prompts", "seen")
BEYOND_VS_INSIDE = (("grpo", "grpo_inside"), ("control", "control_inside"))  # the paired claim of the top panel


def summarize(rows: list[dict], panel: str, conds: tuple[str, ...], ref_of) -> list[dict]:
    """Per condition x set: mean accuracy, the paired difference to ``ref_of(condition)`` (its base)
    and, for a GRPO run, to its labelled control (``protocol.CONTROL_OF``); GRPO's tied groups."""
    out = []
    for c in conds:
        control = protocol.CONTROL_OF.get(c)  # only a GRPO condition has one
        for s in SETS:
            sel = [dict(r) for r in rows if r["support"] == s]
            m, h, n = mean_ci([r["accuracy"] for r in sel if r["condition"] == c])
            ref = ref_of(c)
            g = paired(sel, c, ref, "accuracy") if ref != c else (0.0, 0.0, n)
            k = paired(sel, c, control, "accuracy") if control else (float("nan"), float("nan"), 0)
            z = mean_ci([r["zero_std_frac"] for r in sel if r["condition"] == c and r.get("zero_std_frac") is not None])
            out.append({"panel": panel, "condition": c, "set": s, "mean": m, "ci95": h, "n": n,
                        "vs": ref, "diff_mean": g[0], "diff_ci95": g[1], "control": control or "",
                        "vs_control_mean": k[0], "vs_control_ci95": k[1], "zero_std_frac": z[0]})
    return out


def plot(plotted: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(panel, conds, title) for panel, conds, title in (
        ("top", TOP, "RL data inside vs beyond the SFT support"),
        ("bottom", BOTTOM, "SFT covering the atoms through compositional vs atomic traces"))
        if any(p["panel"] == panel for p in plotted)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.75 * len(panels)), squeeze=False)
    for ax, (panel, conds, title) in zip(axes[:, 0], panels):
        rs = [p for p in plotted if p["panel"] == panel]
        w = 0.8 / len(conds)
        cmap = plt.get_cmap("tab10")
        for j, c in enumerate(conds):
            vals = [next(p for p in rs if p["condition"] == c and p["set"] == s) for s in SETS]
            ax.bar([i + (j - (len(conds) - 1) / 2) * w for i in range(len(SETS))], [100 * v["mean"] for v in vals],
                   w, yerr=[100 * (0 if v["ci95"] != v["ci95"] else v["ci95"]) for v in vals], capsize=2,
                   color=cmap(j), label=LABELS[c])
        ax.set_xticks(range(len(SETS)), ["unseen compositions (held out)", "RL compositions", "SFT compositions"])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        ax.set_title(title, fontsize=10)
    fig.suptitle("Finding 4: mean over (split, seed) units, 95% t-intervals", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig4", __doc__, protocol.PRESETS)
    ap.add_argument("--bottom-splits", type=int, nargs="+", default=None,
                    help="partition seeds of the bottom panel (default: --splits)")
    ap.add_argument("--panels", nargs="+", default=["top", "bottom"], choices=["top", "bottom"])
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    top = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo", "grpo_inside"), "core",
                               a.workers, a.runs, a.out)
    bottom = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.bottom_splits or a.splits),
                                  ("sft_compounds+grpo", "sft_atoms+grpo"), "all", a.workers, a.runs, a.out)
    top_rows = protocol.run_study(top) if "top" in a.panels else []
    bottom_rows = protocol.run_study(bottom) if "bottom" in a.panels else []
    plotted = summarize(top_rows, "top", TOP, lambda c: "sft") if top_rows else []
    plotted += summarize(bottom_rows, "bottom", BOTTOM, lambda c: c.split("+")[0]) if bottom_rows else []
    diffs = [{"panel": "top", "condition": a_, "minus": b_, "set": s, **dict(zip(("diff_mean", "diff_ci95", "n"),
              paired([r for r in top_rows if r["support"] == s], a_, b_, "accuracy")))}
             for a_, b_ in BEYOND_VS_INSIDE for s in SETS] if top_rows else []
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(plotted + diffs, out / "fig4.csv")
    write_csv(top_rows + bottom_rows, out / "fig4_units.csv")
    plot(plotted, out / "fig4")
    write_json({"figure": "fig4", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "runs": sorted({r["run"] for r in top_rows + bottom_rows}),
                "configs_of_first_unit": {
                    k: [kind, c.to_dict()]
                    for cfg, panel in ((top, "top"), (bottom, "bottom")) if panel in a.panels
                    for k, (kind, c) in protocol.unit_configs(cfg, cfg.splits[0], cfg.seeds[0]).items()},
                "plotted": plotted, "beyond_minus_inside": diffs}, out / "fig4.json")
    for p in plotted:
        if p["set"] == "unseen":
            line = (f"{p['panel']:>6} {LABELS[p['condition']]:>38}: unseen {100 * p['mean']:5.1f} ± "
                    f"{100 * p['ci95']:.1f}  (vs {p['vs']}: {100 * p['diff_mean']:+.1f} ± {100 * p['diff_ci95']:.1f})")
            if p["control"]:
                line += (f"  (vs {p['control']}: {100 * p['vs_control_mean']:+.1f} ± "
                         f"{100 * p['vs_control_ci95']:.1f}; tied groups {100 * p['zero_std_frac']:.0f}%)")
            print(line)
    for d in diffs:
        print(f"   top {d['condition']} − {d['minus']} on {d['set']}: {100 * d['diff_mean']:+.1f} ± "
              f"{100 * d['diff_ci95']:.1f}")
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig4.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
