"""Figure 8 (theory vs experiment): the identification checker's prediction against trained accuracy.

    python -m experiments.fig8 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0 1]

For every trained run and every target composition it never trained on, ``hlsm.identify``
predicts from the run's training support (the compositions its SFT and, for RL and control runs,
its RL data contained) whether the target is reachable; the run's greedy accuracy on that
composition (cached post-hoc evaluation, ``by=composition``, on ``TARGETS`` compositions per target
support with ``ITEMS`` items each on average) says whether it was reached
(success: accuracy >= 0.5). Runs: the protocol study's SFT base, GRPO and labelled control
(targets: held-out compositions at L_train and deeper ones at L_train + 1 and + 2) and fig2's held-out
skill runs (targets: unseen compositions using a held-out skill at L_train and at L_train + 1; SFT
saw the skill only as an atom, RL reintroduced it as atoms or inside compositions).

Every interface key (``module``, ``skill-skill``, ``skill-routing``) with tied or positional units
is scored, and the local criterion of Theorem 3.4 (``local``: every step's parent-children interface
has a witness in the training support, ``hlsm.identify.local``); the checker's default (``module``,
tied) is the primary prediction, fixed before looking. ``--sources protocol`` (or ``fig2``) scores
one source's runs only and names its files ``fig8_protocol.*`` (``fig8_fig2.*``). For fig2's GRPO
arms also the RL-enrichment check (``hlsm.identify.enrichment``: locally reachable from SFT plus the
RL compositions whose p0, the SFT base's sampled success rate measured here per composition on a
sample of ``P0_COMPS`` of the arm's RL compositions (the check sees only those), lies strictly
inside (0, 1)): ``fig8_enrichment.csv`` scores its call (and the call counting saturated
compositions, and SFT's local call alone) against the arm's success, with the arm's paired gain over
its base on the same targets where the call says reachable and where it does not.
``fig8_calibration.csv``: per criterion and scope, the graded prediction in five bins against the
observed success rate; ``fig8_wrong.csv``: the local criterion's wrong calls with the target's
unwitnessed interfaces. Reported per criterion: AUROC of the binary prediction and of a graded one
(coverage keys: mean of the fractions of needed units identified and needed interfaces covered;
local: the fraction of steps witnessed, and separately the witness count of the target's rarest
interface) against success, with 95% bootstrap intervals over runs, and the mean accuracy of
predicted-reachable vs -unreachable targets.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments import heldout, protocol
from experiments.report import (
    figure_parser,
    legend_below,
    output_dir,
    partial_stem,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from experiments.runs import cached_json, posthoc_eval
from hlsm.identify import (
    INTERFACES,
    identify,
    interfaces_of,
    local_support,
    parse_composition,
    show_interface,
    units_of,
)
from hlsm.sft import make_split

# the pairwise-coverage criteria (one per interface key, tied or positional units) and the local
# criterion of Theorem 3.4 (every step's parent-children interface witnessed; hlsm.identify.local)
LOCAL = "local"
CRITERIA = [(key, pos) for key in (*INTERFACES, LOCAL) for pos in (False, True)]
PRIMARY = ("module", False)
SUCCESS = 0.5  # a target counts as reached when the run's accuracy on it is at least this
# each target support is cut down to TARGETS compositions (the same for every run of a unit), each
# scored on ITEMS items on average: one or two items per target made success a coin flip
TARGETS, ITEMS = 128, 8
# RL enrichment (fig2's GRPO runs): the SFT base's p0 per RL composition, P0_ITEMS items x P0_SAMPLES
# samples at T = 1 on P0_COMPS of the arm's RL compositions (its prompts' eval twin)
P0_COMPS, P0_ITEMS, P0_SAMPLES = 256, 4, 8
P0_SUPPORT = {"atoms": "eval_heldout_atoms", "composed": "rl_prompts"}  # arm -> eval support of its RL compositions


def criterion_name(key: str, positional: bool) -> str:
    return f"{key}{' positional' if positional else ''}"


def support_compositions(split, names) -> list:
    return list(dict.fromkeys(c for n in names for c in split.support(n).enumerate()))


SOURCES = ("protocol", "fig2")  # the protocol study's runs; fig2's held-out skill runs


def run_sources(a) -> list[dict]:
    """Every run to score: its directory, training supports and target supports."""
    study = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo",), "core", a.workers, a.runs,
                                 a.out)
    srcs = []
    for r in protocol.run_study(study) if "protocol" in a.sources else []:
        if r["support"] != "unseen" or r["condition"] not in ("sft", "grpo", "control"):
            continue
        spec = dict(protocol.PRESETS[a.preset]["split"], partition_seed=r["split"])
        train = ("sft", "atoms") + (("rl",) if r["condition"] != "sft" else ())
        srcs.append({"source": "protocol", "split": r["split"], "seed": r["seed"], "condition": r["condition"],
                     "run": Path(a.runs) / r["run"], "spec": spec, "train": train, "targets": ("unseen", "deeper")})
    if "fig2" not in a.sources:
        return srcs
    finals = [r for r in heldout.run_units("fig2", a.preset, a.splits, a.seeds, a.runs, a.workers)[0]
              if r["support"] == "unseen"]
    base = {(r["split"], r["seed"]): Path(a.runs) / r["run"] for r in finals if r["condition"] == "sft"}
    for r in finals:
        arm = r["condition"].split("_")[-1]
        train = ("sft", "atoms", "heldout_atoms") + ((heldout.ARMS[arm],) if r["condition"] != "sft" else ())
        srcs.append({"source": "fig2", "split": r["split"], "seed": r["seed"], "condition": r["condition"],
                     "run": Path(a.runs) / r["run"], "spec": heldout.split_spec("fig2", r["split"], a.preset),
                     "train": train, "targets": ("unseen", "deeper"),
                     # a GRPO arm's enrichment check reads its base's p0 on the arm's RL compositions
                     "p0": (base[(r["split"], r["seed"])], arm) if r["condition"].startswith("grpo") else None})
    return srcs


def base_p0(run: Path, spec: dict, support: str, seed: int) -> dict[str, float]:
    """composition name -> the policy's sampled success rate (pass@1 of P0_SAMPLES samples at T = 1,
    over P0_ITEMS items each on average) on P0_COMPS compositions of the eval support ``support``."""
    from hlsm.checkpoint import load_policy, read_config
    from hlsm.evaluate import evaluate

    split = make_split(spec).restrict_eval((support,), P0_COMPS, seed=0)
    model = load_policy(run)[0]
    rows = evaluate(model, split, (support,), n=P0_COMPS * P0_ITEMS, seed=seed, fmt=read_config(run)["fmt"],
                    by=("composition",), samples=P0_SAMPLES, pass_k=(1,), temperature=1.0)
    return {r["group"]: float(r["pass@1"]) for r in rows}


def enrichment_calls(s: dict, comps: list, targets: list) -> dict:
    """composition -> (enrichment's prediction, its prediction counting saturated compositions, SFT
    alone) for a GRPO source, from its base's cached p0."""
    from hlsm.identify import enrichment

    base, arm = s["p0"]
    support = P0_SUPPORT[arm]
    p0 = cached_json(base, "fig8-p0", {"spec": s["spec"], "support": support, "seed": s["seed"],
                                       "n": [P0_COMPS, P0_ITEMS, P0_SAMPLES]},
                     base_p0, base, s["spec"], support, s["seed"])
    p0 = {parse_composition(k): v for k, v in p0.items()}
    res = enrichment(comps, None, p0, targets)  # comps: the base's training support; RL: the measured ones
    return {e.composition: (int(e.reachable), int(e.reachable_with_saturated), int(e.sft_reachable)) for e in res}


def predictions(sources: list[dict]) -> list[dict]:
    """One row per (run, target composition): accuracy, success and every criterion's prediction."""
    rows, cache = [], {}
    for s in sources:
        split = make_split(s["spec"])
        comps = support_compositions(split, s["train"])
        scored = split.restrict_eval(s["targets"], TARGETS, seed=s["split"]).to_dict()
        acc = posthoc_eval(s["run"], scored, s["targets"], n=TARGETS * ITEMS, seed=s["seed"], by=("composition",))
        targets = [(e["support"], parse_composition(e["group"]), float(e["answer"]), int(e["n"])) for e in acc]
        depth = max(len(c) for _, c, _, _ in targets)
        idents = {}
        for key, pos in CRITERIA:
            ck = (frozenset(comps), key, pos, depth)
            if ck not in cache:
                cache[ck] = (local_support(comps, positional=pos, max_depth=depth) if key == LOCAL else
                             identify(comps, interface=key, positional=pos, max_depth=depth if pos else None))
            idents[(key, pos)] = cache[ck]
        enr = enrichment_calls(s, support_compositions(split, s["train"][:-1]), [c for _, c, _, _ in targets]) \
            if s.get("p0") else {}
        for sup, comp, a, n in targets:
            row = {"source": s["source"], "split": s["split"], "seed": s["seed"], "condition": s["condition"],
                   "run": s["run"].name, "target_set": sup, "composition": "+".join(f"{r}.{k}" for r, k in comp),
                   "depth": len(comp), "n_items": n, "accuracy": a, "success": int(a >= SUCCESS)}
            if comp in enr:
                row["pred[enrichment]"], row["pred[enrichment+saturated]"], row["pred[sft_local]"] = enr[comp]
            for (key, pos), ident in idents.items():
                reach = ident.reach(comp)
                name = criterion_name(key, pos)
                if key == LOCAL:  # graded: the fraction of the target's steps whose interface is witnessed
                    row[f"pred[{name}]"], row[f"score[{name}]"] = int(reach.reachable), reach.score
                    row[f"witnesses[{name}]"] = reach.min_witnesses  # of the target's rarest interface
                    if not pos:
                        row["local_missing"] = "; ".join(f"t={t}: {show_interface(i)}" for t, i in reach.missing)
                    continue
                needed_u = {u for c in units_of(comp, pos).values() for u in c}
                needed_i = interfaces_of(comp, key)
                frac_u = 1 - len(reach.unidentified) / len(needed_u)
                frac_i = 1 - len(reach.uncovered) / len(needed_i) if needed_i else 1.0
                row[f"pred[{name}]"] = int(reach.reachable)
                row[f"score[{name}]"] = (frac_u + frac_i) / 2
            rows.append(row)
    return rows


def auroc(score, label) -> float:
    """P(score of a success > score of a failure), ties counted half; nan without both classes."""
    from scipy.stats import rankdata

    score, label = np.asarray(score, float), np.asarray(label, bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    # Mann-Whitney: with average ranks for ties, (rank sum of successes - its minimum) / (n_pos n_neg)
    # is exactly the pairwise P(greater) + P(tie) / 2, in O(n log n) instead of O(n_pos n_neg)
    ranks = rankdata(score)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc(rows: list[dict], col: str, reps: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """AUROC on all rows and a 95% percentile interval from resampling runs (clusters) with replacement."""
    runs = sorted({r["run"] for r in rows})
    by_run = {u: ([r[col] for r in rows if r["run"] == u], [r["success"] for r in rows if r["run"] == u])
              for u in runs}
    point = auroc([r[col] for r in rows], [r["success"] for r in rows])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(reps):
        pick = rng.integers(0, len(runs), len(runs))
        s = [x for i in pick for x in by_run[runs[i]][0]]
        y = [x for i in pick for x in by_run[runs[i]][1]]
        v = auroc(s, y)
        if v == v:
            stats.append(v)
    lo, hi = (np.percentile(stats, [2.5, 97.5]) if stats else (float("nan"), float("nan")))
    return point, float(lo), float(hi)


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    scopes = {"all": rows}
    for src in dict.fromkeys(r["source"] for r in rows):
        for ts in dict.fromkeys(r["target_set"] for r in rows if r["source"] == src):
            scopes[f"{src}:{ts}"] = [r for r in rows if r["source"] == src and r["target_set"] == ts]
    for scope, sel in scopes.items():
        for key, pos in CRITERIA:
            name = criterion_name(key, pos)
            b = bootstrap_auroc(sel, f"pred[{name}]")
            g = bootstrap_auroc(sel, f"score[{name}]")
            w = bootstrap_auroc(sel, f"witnesses[{name}]") if key == LOCAL else (float("nan"),) * 3
            yes = [r["accuracy"] for r in sel if r[f"pred[{name}]"]]
            no = [r["accuracy"] for r in sel if not r[f"pred[{name}]"]]
            out.append({"scope": scope, "criterion": name, "primary": (key, pos) == PRIMARY, "targets": len(sel),
                        "successes": sum(r["success"] for r in sel), "predicted_reachable": len(yes),
                        "auroc": b[0], "auroc_lo": b[1], "auroc_hi": b[2],
                        "auroc_graded": g[0], "auroc_graded_lo": g[1], "auroc_graded_hi": g[2],
                        "auroc_witnesses": w[0], "auroc_witnesses_lo": w[1], "auroc_witnesses_hi": w[2],
                        "acc_if_reachable": float(np.mean(yes)) if yes else float("nan"),
                        "acc_if_unreachable": float(np.mean(no)) if no else float("nan")})
    return out


ENRICHMENT = ("enrichment", "enrichment+saturated", "sft_local")


def enrichment_summary(rows: list[dict]) -> list[dict]:
    """Per GRPO arm x target set x enrichment call: AUROC of the call against the arm's success, the
    success rates where it predicts reachable / not, and the arm's paired gain over its SFT base on
    the same targets (same unit, same items) where it predicts reachable / not."""
    base = {(r["split"], r["seed"], r["target_set"], r["composition"]): r["success"] for r in rows
            if r["source"] == "fig2" and r["condition"] == "sft"}
    out = []
    for cond in dict.fromkeys(r["condition"] for r in rows if "pred[enrichment]" in r):
        for ts in dict.fromkeys(r["target_set"] for r in rows if r["condition"] == cond):
            sel = [r for r in rows if r["condition"] == cond and r["target_set"] == ts and "pred[enrichment]" in r]
            for call in ENRICHMENT:
                col = f"pred[{call}]"
                b = bootstrap_auroc(sel, col)
                row = {"condition": cond, "target_set": ts, "call": call, "targets": len(sel),
                       "successes": sum(r["success"] for r in sel), "auroc": b[0], "auroc_lo": b[1], "auroc_hi": b[2]}
                for want, tag in ((1, "reachable"), (0, "unreachable")):
                    part = [r for r in sel if r[col] == want]
                    gain = [r["success"] - base[(r["split"], r["seed"], ts, r["composition"])] for r in part
                            if (r["split"], r["seed"], ts, r["composition"]) in base]
                    row[f"n_{tag}"] = len(part)
                    row[f"success_if_{tag}"] = float(np.mean([r["success"] for r in part])) if part else float("nan")
                    row[f"gain_if_{tag}"] = float(np.mean(gain)) if gain else float("nan")
                out.append(row)
    return out


def calibration(rows: list[dict], bins: int = 5) -> list[dict]:
    """Per scope x criterion x bin of the graded prediction: mean prediction, success rate, n."""
    out = []
    scopes = {f"{r['source']}:{r['target_set']}" for r in rows}
    for scope in sorted(scopes):
        sel = [r for r in rows if f"{r['source']}:{r['target_set']}" == scope]
        for key, pos in CRITERIA:
            col = f"score[{criterion_name(key, pos)}]"
            for b in range(bins):
                lo, hi = b / bins, (b + 1) / bins
                inb = [r for r in sel if lo <= r[col] < hi or (b == bins - 1 and r[col] == 1.0)]
                if inb:
                    out.append({"scope": scope, "criterion": criterion_name(key, pos), "bin_lo": lo, "bin_hi": hi,
                                "n": len(inb), "mean_prediction": float(np.mean([r[col] for r in inb])),
                                "success_rate": float(np.mean([r["success"] for r in inb])),
                                "mean_accuracy": float(np.mean([r["accuracy"] for r in inb]))})
    return out


def plot(summary: list[dict], rows: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [criterion_name(k, p) for k, p in CRITERIA]
    scopes = list(dict.fromkeys(s["scope"] for s in summary))
    # the two AUROC panels side by side, the scatter under them at full width: readable ~1,000 px wide
    fig = plt.figure(figsize=(12, 8.6))
    grid = fig.add_gridspec(2, 2)
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])]
    w = 0.8 / len(scopes)
    cmap = plt.get_cmap("tab10")
    for ax, col, title in ((axes[0], "auroc", "AUROC: binary prediction"),
                           (axes[1], "auroc_graded", "AUROC: graded prediction")):
        for j, sc in enumerate(scopes):
            rs = [next(s for s in summary if s["scope"] == sc and s["criterion"] == n) for n in names]
            xs = [i + (j - (len(scopes) - 1) / 2) * w for i in range(len(names))]
            ys = [r[col] for r in rs]
            lo = [0 if y != y or r[f"{col}_lo"] != r[f"{col}_lo"] else y - r[f"{col}_lo"] for y, r in zip(ys, rs)]
            hi = [0 if y != y or r[f"{col}_hi"] != r[f"{col}_hi"] else r[f"{col}_hi"] - y for y, r in zip(ys, rs)]
            ax.bar(xs, [0 if y != y else y for y in ys], w, yerr=[lo, hi], capsize=2, color=cmap(j), label=sc)
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUROC (95% bootstrap interval over runs)")
        ax.set_title(title + "\n(0.5: chance; primary criterion: module)", fontsize=10)
    ax = axes[2]  # the primary criterion's graded score against accuracy, per (run, target)
    col = f"score[{criterion_name(*PRIMARY)}]"
    for j, sc in enumerate(scopes[1:]):
        src, ts = sc.split(":")
        sel = [r for r in rows if r["source"] == src and r["target_set"] == ts]
        jitter = np.random.default_rng(j).uniform(-0.015, 0.015, len(sel))
        ax.scatter([r[col] + d for r, d in zip(sel, jitter)], [r["accuracy"] for r in sel], s=6, alpha=0.35,
                   color=cmap(j + 1), label=sc)
    ax.set_xlabel("graded prediction (module key): identified / covered fraction (jittered)")
    ax.set_ylabel("trained accuracy on the composition")
    ax.set_title("per (run, unseen composition)", fontsize=10)
    fig.suptitle("Theory vs experiment: identification checker's prediction vs trained accuracy", fontsize=11)
    fig.tight_layout()
    legend_below(fig, len(scopes))  # one colour per scope in all three panels
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig8", __doc__, protocol.PRESETS)
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES,
                    help="which runs to score (default: both)")
    a = ap.parse_args(argv)
    if "fig2" in a.sources and a.preset not in heldout.PRESETS:
        ap.error(f"--preset {a.preset}: fig2's runs have no such preset (allowed: {', '.join(heldout.PRESETS)}); "
                 f"add --sources protocol")
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    rows = predictions(run_sources(a))
    summary = summarize(rows)
    out = Path(a.out)  # resolved by output_dir after parsing
    # every source writes fig8.*; one source alone writes fig8_<source>.*, keeping the other's files
    stem = partial_stem("fig8", a.sources, SOURCES)
    write_csv(summary, out / f"{stem}.csv")
    write_csv(rows, out / f"{stem}_targets.csv")
    write_csv(calibration(rows), out / f"{stem}_calibration.csv")
    enrich = enrichment_summary(rows)
    write_csv(enrich, out / f"{stem}_enrichment.csv")
    local = f"pred[{criterion_name(LOCAL, False)}]"
    write_csv([{k: r[k] for k in ("source", "condition", "split", "seed", "target_set", "composition", "accuracy",
                                   "success", local, "local_missing")}
               for r in rows if r[local] != r["success"]], out / f"{stem}_wrong.csv")
    plot(summary, rows, out / stem)
    write_json({"figure": "fig8", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "success_threshold": SUCCESS, "targets_per_set": TARGETS,
                "items_per_target": ITEMS,
                "primary": criterion_name(*PRIMARY), "runs": sorted({r["run"] for r in rows}),
                "p0_measure": {"compositions_sampled": P0_COMPS, "items": P0_ITEMS, "samples": P0_SAMPLES,
                               "note": "enrichment sees only the sampled RL compositions"},
                "summary": summary, "enrichment": enrich}, out / f"{stem}.json")
    for s in summary:
        print(f"{s['scope']:>18} {s['criterion']:>26}{'*' if s['primary'] else ' '}: n={s['targets']:4d} "
              f"succ={s['successes']:4d} pred={s['predicted_reachable']:4d}  AUROC {s['auroc']:.3f} "
              f"[{s['auroc_lo']:.3f}, {s['auroc_hi']:.3f}]  graded {s['auroc_graded']:.3f} "
              f"[{s['auroc_graded_lo']:.3f}, {s['auroc_graded_hi']:.3f}]  acc reach/unreach "
              f"{s['acc_if_reachable']:.3f}/{s['acc_if_unreachable']:.3f}"
              + (f"  witnesses {s['auroc_witnesses']:.3f} [{s['auroc_witnesses_lo']:.3f}, "
                 f"{s['auroc_witnesses_hi']:.3f}]" if s["auroc_witnesses"] == s["auroc_witnesses"] else ""))
    for e in enrich:
        print(f"enrichment {e['condition']:>13} {e['target_set']:>7} {e['call']:>21}: n={e['targets']:4d} "
              f"AUROC {e['auroc']:.3f} [{e['auroc_lo']:.3f}, {e['auroc_hi']:.3f}]  reachable {e['n_reachable']} "
              f"(success {e['success_if_reachable']:.3f}, gain over base {e['gain_if_reachable']:+.3f}) / "
              f"unreachable {e['n_unreachable']} (success {e['success_if_unreachable']:.3f}, gain "
              f"{e['gain_if_unreachable']:+.3f})")
    print(f"wall {time.time() - t0:.0f} s -> {out / stem}.png")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
