"""Figure 4 (Finding 4): how the SFT and RL data distributions relate matters.

    python -m experiments.fig4 [--preset tiny|cpu] [--seeds 0 1 2] [--splits 0 1] [--panels top bottom]
                               [--bottom-splits 0 1] [--bottom-bases sft_compounds sft_missing]

(top) RL *beyond* the SFT support (``grpo``: GRPO on compositions SFT never showed) vs RL
*inside* it (``grpo_inside``: GRPO on the SFT compositions, fresh inputs), beside the SFT base
and each RL run's labelled control (``control``, ``control_inside``), on held-out unseen
compositions, the RL prompts' compositions and the seen ones. (bottom) compound-trace SFT that
covers the whole skill inventory (``sft_compounds``) vs the same SFT missing a quarter of the skills
(``sft_missing``: never shown, not even as atoms; ``protocol.sft_missing_split``), each followed by
the same GRPO on compositions beyond its support (and its labelled control): accuracy on the unseen
compositions, on those of them that use a missing skill and on those that use none, before and after
RL. ``--bottom-bases`` can add ``sft_atoms`` (the atoms only as L = 1 traces). The bases get half
the main base's updates (for compute). The runs are the protocol study's (same configs, same cache).
Every number is a mean over (split, seed) units with a 95% t-interval; differences are paired.
Both panels write ``fig4.*``; ``--panels top`` or ``--panels bottom`` alone writes ``fig4_top.*`` /
``fig4_bottom.*``, so each panel can be regenerated without the other.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from experiments import protocol
from experiments.report import (
    figure_parser,
    interval_note,
    mean_ci,
    output_dir,
    paired,
    partial_stem,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from hlsm.names import RL_PROMPTS, SEEN, UNSEEN, UNSEEN_COVERED, UNSEEN_MISSING

TOP = ("sft", "grpo_inside", "control_inside", "grpo", "control")
BOTTOM_BASES = ("sft_compounds", "sft_missing")  # the paper's comparison; sft_atoms on request
LABELS = {"sft": "SFT", "grpo_inside": "+RL inside SFT support", "grpo": "+RL beyond SFT support",
          "control": "+labelled SFT on the RL prompts beyond",
          "control_inside": "+labelled SFT on the RL prompts inside",
          "sft_compounds": "SFT: compound traces, every skill",
          "sft_compounds+grpo": "every-skill SFT + RL", "sft_compounds+control": "every-skill SFT + labelled control",
          "sft_missing": "SFT: compound traces, a quarter of the skills missing",
          "sft_missing+grpo": "missing-skill SFT + RL", "sft_missing+control": "missing-skill SFT + labelled control",
          "sft_atoms": "SFT: atomic traces", "sft_atoms+grpo": "atomic SFT + RL",
          "sft_atoms+control": "atomic SFT + labelled control"}
SETS = (UNSEEN, RL_PROMPTS, SEEN)
TICK_WRAP = 20  # characters per line of a set's name under its bars
BOTTOM_SETS = (UNSEEN, UNSEEN_MISSING, UNSEEN_COVERED, RL_PROMPTS, SEEN)
SET_LABELS = {UNSEEN: "unseen compositions (held out)", UNSEEN_MISSING: "unseen, using a missing skill",
              UNSEEN_COVERED: "unseen, using none", RL_PROMPTS: "RL compositions", SEEN: "SFT compositions"}
BEYOND_VS_INSIDE = (("grpo", "grpo_inside"), ("control", "control_inside"))  # the paired claim of the top panel
COVERED_VS_MISSING = (("sft_compounds", "sft_missing"), ("sft_compounds+grpo", "sft_missing+grpo"),
                      ("sft_compounds+control", "sft_missing+control"))  # ... and of the bottom panel


def bottom_conditions(bases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for b in bases for c in (b, f"{b}+grpo", f"{b}+control"))


def summarize(rows: list[dict], panel: str, conds: tuple[str, ...], ref_of, sets=SETS) -> list[dict]:
    """Per condition x set: mean accuracy, the paired difference to ``ref_of(condition)`` (its base)
    and, for a GRPO run, to its labelled control (``protocol.CONTROL_OF``); GRPO's tied groups."""
    out = []
    for c in conds:
        control = protocol.CONTROL_OF.get(c)  # only a GRPO condition has one
        for s in sets:
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

    panels = [(panel, title) for panel, title in (
        ("top", "RL data inside vs beyond the SFT support"),
        ("bottom", "SFT covering every skill through compound traces vs SFT missing some"))
        if any(p["panel"] == panel for p in plotted)]
    n = max((p["n"] for p in plotted), default=0)
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.8 * len(panels)), squeeze=False)
    for ax, (panel, title) in zip(axes[:, 0], panels):
        rs = [p for p in plotted if p["panel"] == panel]
        conds, sets = list(dict.fromkeys(p["condition"] for p in rs)), list(dict.fromkeys(p["set"] for p in rs))
        w = 0.8 / len(conds)
        cmap = plt.get_cmap("tab10")
        for j, c in enumerate(conds):
            vals = [next(p for p in rs if p["condition"] == c and p["set"] == s) for s in sets]
            ax.bar([i + (j - (len(conds) - 1) / 2) * w for i in range(len(sets))], [100 * v["mean"] for v in vals],
                   w, yerr=[100 * (0 if v["ci95"] != v["ci95"] else v["ci95"]) for v in vals], capsize=2,
                   color=cmap(j), label=LABELS[c])
        # set names wrapped so that five of them side by side do not run together
        ax.set_xticks(range(len(sets)), [textwrap.fill(SET_LABELS[s], TICK_WRAP) for s in sets], fontsize=10)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        # under the axes, not over the bars
        ax.legend(fontsize=9, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
        ax.set_title(title, fontsize=11)
    fig.suptitle(f"Finding 4: {interval_note(n)}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def paired_diffs(rows: list[dict], panel: str, pairs, sets) -> list[dict]:
    return [{"panel": panel, "condition": a, "minus": b, "set": s, **dict(zip(("diff_mean", "diff_ci95", "n"),
             paired([r for r in rows if r["support"] == s], a, b, "accuracy")))}
            for a, b in pairs for s in sets]


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig4", __doc__, protocol.PRESETS)
    ap.add_argument("--bottom-splits", type=int, nargs="+", default=None,
                    help="partition seeds of the bottom panel (default: --splits)")
    ap.add_argument("--bottom-bases", nargs="+", default=list(BOTTOM_BASES),
                    choices=["sft_compounds", "sft_missing", "sft_atoms"], help="the bottom panel's SFT bases")
    ap.add_argument("--panels", nargs="+", default=["top", "bottom"], choices=["top", "bottom"])
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    bottom_conds = bottom_conditions(tuple(a.bottom_bases))
    top = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo", "grpo_inside"), "core",
                               a.workers, a.runs, a.out)
    bottom = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.bottom_splits or a.splits),
                                  tuple(f"{b}+grpo" for b in a.bottom_bases), "all", a.workers, a.runs, a.out)
    top_rows = protocol.run_study(top) if "top" in a.panels else []
    # the unseen compositions split by whether they use a skill the sft_missing base never saw: scored
    # post hoc for every bottom run on the same items (the split that names the missing skills)
    bottom_rows = protocol.run_study(bottom, posthoc=(UNSEEN_MISSING, UNSEEN_COVERED),
                                     posthoc_split=protocol.sft_missing_split) if "bottom" in a.panels else []
    plotted = summarize(top_rows, "top", TOP, lambda c: "sft") if top_rows else []
    plotted += summarize(bottom_rows, "bottom", bottom_conds, lambda c: c.split("+")[0],
                         BOTTOM_SETS) if bottom_rows else []
    diffs = paired_diffs(top_rows, "top", BEYOND_VS_INSIDE, SETS) if top_rows else []
    pairs = [(x, y) for x, y in COVERED_VS_MISSING if x in bottom_conds and y in bottom_conds]
    diffs += paired_diffs(bottom_rows, "bottom", pairs, BOTTOM_SETS) if bottom_rows else []
    out = Path(a.out)  # resolved by output_dir after parsing
    stem = partial_stem("fig4", a.panels, ("top", "bottom"))  # one panel alone keeps the other's files
    write_csv(plotted + diffs, out / f"{stem}.csv")
    write_csv(top_rows + bottom_rows, out / f"{stem}_units.csv")
    plot(plotted, out / stem)
    missing = {sp: protocol.sft_missing_split(dict(protocol.PRESETS[a.preset]["split"], partition_seed=sp))
               for sp in bottom.splits} if "bottom" in a.panels and "sft_missing" in a.bottom_bases else {}
    write_json({"figure": "fig4", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "runs": sorted({r["run"] for r in top_rows + bottom_rows}),
                "missing_skills_by_split": missing,
                "configs_of_first_unit": {
                    k: [kind, c.to_dict()]
                    for cfg, panel in ((top, "top"), (bottom, "bottom")) if panel in a.panels
                    for k, (kind, c) in protocol.unit_configs(cfg, cfg.splits[0], cfg.seeds[0]).items()},
                "plotted": plotted, "paired_differences": diffs}, out / f"{stem}.json")
    for p in plotted:
        if p["set"] in (UNSEEN, UNSEEN_MISSING, UNSEEN_COVERED):
            line = (f"{p['panel']:>6} {LABELS[p['condition']]:>52}: {p['set']:>14} {100 * p['mean']:5.1f} ± "
                    f"{100 * p['ci95']:.1f}  (vs {p['vs']}: {100 * p['diff_mean']:+.1f} ± {100 * p['diff_ci95']:.1f})")
            if p["control"]:
                line += (f"  (vs {p['control']}: {100 * p['vs_control_mean']:+.1f} ± "
                         f"{100 * p['vs_control_ci95']:.1f}; tied groups {100 * p['zero_std_frac']:.0f}%)")
            print(line)
    for d in diffs:
        print(f"{d['panel']:>6} {d['condition']} − {d['minus']} on {d['set']}: {100 * d['diff_mean']:+.1f} ± "
              f"{100 * d['diff_ci95']:.1f}")
    for sp, m in missing.items():
        print(f"split {sp}: sft_missing never sees {', '.join(m['sft_missing'])}")
    print(f"wall {time.time() - t0:.0f} s -> {out / stem}.png")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
