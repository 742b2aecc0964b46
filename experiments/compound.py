"""The compound-trace regime (issue 31): SFT supplies the atoms inside canonical compound traces.

    python -m experiments.compound [--conditions compound_answer ...] [--splits 0] [--seeds 0]

In the chosen regime every SFT trace is ``explicit``: imitation already decomposes each composition,
and unseen compositions are as easy as seen ones. The paper's mechanism needs SFT traces that hide
the atoms. The ``compound_*`` conditions of ``experiments.regime.CONDITIONS`` install the atoms
explicitly and show each compound as one canonical trace: every value without module tokens
(``values``), the module tokens of all steps with only the last value (``chunked``), or the answer
alone (``answer``). Rollouts may take any form; the verifier reads only the answer.

Each condition's units get the fair test's plateau base (``experiments.fair.plateau_chains``: its rule,
blocks and cap; every chain side by side), which is then read against ``regime.COMPOUND_CRITERIA``,
fixed before any run: the base at its plateau (a unit that misses it is reported, and the other
criteria are read over the units that meet it); a compositional gap (seen - unseen >= 10 points at
L_train); unseen L_train in 15-70%; L_train + 1 >= 3% with its 95% interval over units above 0 (one
unit has no interval: decided only when below 3%); <= 50% tied groups on the RL prompts. A number
that could not be measured leaves its criterion undecided. Every base also reports T = 1 accuracy
and the forms its completions take (``hlsm.text.FORMS``). Writes ``compound.{csv,md,json,png}``
(``--out``; default ``paper_figures/compound/`` for the ``cpu`` preset). The chosen condition's
RL arms and controls are then ``python -m experiments.fair --condition <it>``.
"""

from __future__ import annotations

import time

from experiments import fair, regime
from experiments.engine import parallel
from experiments.report import figure_parser, mean_ci, output_dir, pm, provenance, read_csv, write_csv, write_json
from experiments.runs import cached_json
from hlsm.names import DEEPER, SEEN, UNSEEN, VALIDATION
from hlsm.text import FORMS

CONDITIONS = tuple(c for c in fair.CONDITIONS if c.startswith("compound_"))
CRITERIA = regime.COMPOUND_CRITERIA


def base_row(preset: str, condition: str, unit: tuple, state: dict) -> dict:
    """A plateau base's numbers: accuracy (greedy, T = 1) on seen, validation and unseen L_train and on
    L_train + 1, + 2, p0 and tied groups on the RL prompts, the forms of its completions."""
    p, split = fair.PRESETS[preset], fair.split_spec(preset, unit[0], condition)
    run, depth = state["chain"][-1], split["depth"]
    row = {"condition": condition, "split": unit[0], "seed": unit[1], "run": run.name, "updates": state["updates"],
           "at_plateau": state["at_plateau"], "gain_seen": state["gain"][SEEN],
           "gain_validation": state["gain"][VALIDATION]}
    got = [(f"{r['support']}/L{depth}", r)  # one evaluation of the three supports, one model load
           for r in fair.scores(run, split, (SEEN, VALIDATION, UNSEEN), p["n_test"], unit[1], ("all",))]
    got += [(f"L{r['group']}", r) for r in fair.scores(run, split, (DEEPER,), p["n_deeper"], unit[1], ("depth",))]
    for key, r in got:
        row.update(fair.cells(r, key))
    row["gap"] = row[f"greedy/{SEEN}/L{depth}"] - row[f"greedy/{UNSEEN}/L{depth}"]
    n = regime.PRESETS[p["regime"]]["n_p0"]
    row.update(cached_json(run, "regime-signal", {"split": split, "n": n, "seed": unit[1]}, regime.group_signal,
                           run, split, n, unit[1]))
    return row


def judge(rows: list[dict], depth: int) -> dict:
    """One condition's criteria (plain bools) read over its units at plateau: "plateau" is whether any unit
    met the rule (``n_at`` says how many), the others True / False, or None where they cannot be decided
    (no unit at plateau, a number not measured, the L + 1 interval of one unit above 3%)."""
    at = [r for r in rows if r["at_plateau"]]
    mean = lambda key: mean_ci([r.get(key) for r in at])

    def check(key, ok):
        m = mean(key)[0]
        return None if m != m else bool(ok(m))

    deeper, half, n = mean(f"greedy/L{depth + 1}")
    if deeper != deeper:
        reach = None
    elif deeper < CRITERIA["deeper_min"]:
        reach = False
    else:
        reach = bool(deeper - half > 0) if n > 1 else None
    return {"plateau": bool(at), "n_at": len(at),
            "gap": check("gap", lambda m: m >= CRITERIA["gap_min"]),
            "unseen": check(f"greedy/{UNSEEN}/L{depth}", lambda m: CRITERIA["unseen_lo"] <= m <= CRITERIA["unseen_hi"]),
            "deeper": reach, "tied": check("rl_zero_std", lambda m: m <= CRITERIA["tied_max"])}


def report(rows: list[dict], depth: int) -> tuple[list[dict], str]:
    """Per condition: mean ± 95% t over its units at plateau, the criteria, and a markdown table."""
    keys = ["gap", f"greedy/{SEEN}/L{depth}", f"greedy/{UNSEEN}/L{depth}", f"t1/{UNSEEN}/L{depth}",
            f"greedy/L{depth + 1}", f"greedy/L{depth + 2}", "rl_p0", "rl_zero_std",
            *(f"form/{f}/{UNSEEN}/L{depth}" for f in FORMS)]
    head = ["units at plateau", "gap (seen - unseen)", f"seen L{depth}", f"unseen L{depth}", f"unseen L{depth}, T=1",
            f"L{depth + 1}", f"L{depth + 2}", "RL p0", "tied groups", *(f"{f} form" for f in FORMS), "criteria"]
    lines = ["| condition | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    summary = []
    for cond in dict.fromkeys(r["condition"] for r in rows):
        sel = [r for r in rows if r["condition"] == cond]
        at = [r for r in sel if r["at_plateau"]] or sel  # off-plateau units only when none is at plateau
        stats = {k: mean_ci([r.get(k) for r in at]) for k in keys}
        verdict = judge(sel, depth)
        summary.append({"condition": cond, "units": len(sel), "at_plateau": verdict["n_at"],
                        **{k: m for k, (m, _, _) in stats.items()},
                        **{f"{k} ci95": h for k, (_, h, _) in stats.items()},
                        **{f"c_{k}": v for k, v in verdict.items() if k != "n_at"}})
        said = ", ".join(f"{k} {'—' if v is None else ('yes' if v else 'no')}" for k, v in verdict.items()
                         if k != "n_at")
        cells = [f"{verdict['n_at']} of {len(sel)}", *(pm(m, h, "+" if k == "gap" else "") for k, (m, h, _) in
                                                      stats.items()), said]
        lines.append(f"| `{cond}` | " + " | ".join(cells) + " |")
    lines.append(f"\n%, mean ± 95% t over the units at plateau (all units where none is); greedy unless "
                 f"marked; forms: the share of greedy completions on unseen L{depth} that write every step "
                 f"out with modules (explicit) or values only (values), fewer chunks (chunked), the answer "
                 f"alone, or other. Criteria (regime.COMPOUND_CRITERIA, fixed before any run): "
                 f"{CRITERIA}; — = not decided (no interval with one unit, or no unit at plateau).")
    return summary, "\n".join(lines) + "\n"


def plot(summary: list[dict], depth: int, stem) -> None:
    """Seen vs unseen at L_train (the gap), L_train + 1 and the tied groups per condition, criteria dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import save_figure

    names = [s["condition"] for s in summary]
    panels = [((f"greedy/{SEEN}/L{depth}", f"greedy/{UNSEEN}/L{depth}"),
               f"seen vs unseen L={depth}: gap >= 10,\nunseen in 15-70% (dashed)",
               (CRITERIA["unseen_lo"], CRITERIA["unseen_hi"])),
              ((f"greedy/L{depth + 1}",), f"L={depth + 1} (>= 3%)", (CRITERIA["deeper_min"],)),
              (("rl_zero_std",), "tied RL groups (<= 50%)", (CRITERIA["tied_max"],))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(names) + 2.2), sharey=True)
    for ax, (keys, title, lines) in zip(axes, panels):
        h = 0.8 / len(keys)
        for j, (k, color) in enumerate(zip(keys, ("tab:gray", "tab:blue"))):
            vals = [100 * s.get(k, float("nan")) for s in summary]
            errs = [0 if s.get(f"{k} ci95") != s.get(f"{k} ci95") else 100 * s[f"{k} ci95"] for s in summary]
            ax.barh([i + (j - (len(keys) - 1) / 2) * h for i in range(len(names))], vals, h * 0.95,
                    xerr=errs if any(errs) else None, color=color, capsize=2,  # no zero-width caps with 1 unit
                    label=k.split("/")[1] if len(keys) > 1 else None)
        for x in lines:
            ax.axvline(100 * x, color="tab:red", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("%")
        ax.set_xlim(0, 100)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_yticks(range(len(names)), [f"{s['condition']} ({s['at_plateau']}/{s['units']} at plateau)"
                                           for s in summary])
    axes[0].invert_yaxis()
    n = max(s["units"] for s in summary)
    fig.suptitle(f"Compound-trace regime: bases at L_train = {depth}, trained to the plateau rule or the block cap; "
                 + ("1 unit each, no interval" if n == 1 else "95% t-intervals over units"), fontsize=11)
    fig.tight_layout()
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.compound", __doc__, fair.PRESETS)
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(fair.CONDITIONS))
    fair.add_max_blocks(ap)
    ap.add_argument("--from-csv", default=None, help="re-report the rows of an earlier compound.csv (the criteria "
                                                     "read again), train nothing; needs --out")
    a = ap.parse_args(argv)
    if a.from_csv and not a.out:
        ap.error("--from-csv needs --out")
    out, t0 = output_dir(a.out, a.preset), time.time()
    if a.out is None:
        out = out / "compound"
        out.mkdir(parents=True, exist_ok=True)
    units = [(sp, s) for sp in a.splits for s in a.seeds]
    if a.from_csv:
        from hlsm.evaluate import parse_cell

        rows = [{k: parse_cell(v) for k, v in r.items()} for r in read_csv(a.from_csv)]
        a.conditions = list(dict.fromkeys(r["condition"] for r in rows))
        a.seeds, a.splits = sorted({r["seed"] for r in rows}), sorted({r["split"] for r in rows})
    else:
        keys = [(c, u) for c in a.conditions for u in units]
        state = fair.plateau_chains(a.preset, {k: k for k in keys}, a.runs, a.workers,  # every chain side by side
                                    a.max_blocks)
        rows = parallel(base_row, [(a.preset, c, u, state[(c, u)]) for c, u in keys], a.workers)
    depth = fair.split_spec(a.preset, units[0][0], a.conditions[0])["depth"]
    summary, md = report(rows, depth)
    write_csv(rows, out / "compound.csv")
    write_csv(summary, out / "compound_summary.csv")
    (out / "compound.md").write_text(md)
    plot(summary, depth, out / "compound")
    write_json({"study": vars(a), "criteria": CRITERIA, "plateau_rule": fair.PLATEAU, "preset": fair.PRESETS[a.preset],
                "conditions": {c: regime.CONDITIONS[c] for c in a.conditions}, "summary": summary,
                "provenance": provenance(), "wall_s": time.time() - t0}, out / "compound.json")
    print(md)
    print(f"wall {time.time() - t0:.0f} s -> {out / 'compound.csv'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
