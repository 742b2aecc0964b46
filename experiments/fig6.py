"""Figure 6 (meta-probing drift, seed 004): does RL drift less from the base than continued SFT?

    python -m experiments.fig6 [--preset tiny|cpu] [--seeds 0 1 2] [--splits 0 1]

From each protocol SFT base, the protocol's GRPO run and its labelled control (continued SFT on
the same RL prompts, same updates and learning rate) are trained again with policies kept every
``--every`` steps (their configs differ from the protocol's only in ``eval_every``, so they are
cached as their own runs). At every kept step: the mean per-token KL(base || policy) on probe
items (seen, RL and unseen compositions, teacher-forced on the gold completion; probes.drift),
the relative parameter change, and the per-skill accuracy profile (greedy, fraction of trace steps
using that skill that are right) on seen and unseen compositions. The claim (Bai et al. 2025):
RL keeps a more stable profile and drifts less than SFT. Mean over (split, seed) units, 95%
t-intervals; the per-snapshot measures are cached in the run directories.
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
    panel_grid,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from experiments.runs import cached_json, run_all
from hlsm.checkpoint import snapshots
from hlsm.names import drift_stream

CONDITIONS = {"grpo": "GRPO (outcome reward)", "control": "continued SFT with labels (control)"}
N_KL = 128  # probe items per support for the output KL
N_PROFILE = 256  # items per support for the per-skill profile
PROFILE_SUPPORTS = ("seen", "unseen")


def plans(a) -> dict:
    study = protocol.StudyConfig(a.preset, tuple(a.seeds), tuple(a.splits), ("grpo",), "core", a.workers, a.runs,
                                 a.out)
    units = [(sp, s) for sp in a.splits for s in a.seeds]
    out = {}
    for u in units:
        cfgs = protocol.unit_configs(study, *u)
        for name in ("sft", *CONDITIONS):
            kind, c = cfgs[name]
            if name != "sft":
                c.eval_every = a.every
            out[(u, name)] = (kind, c)
    return out


def measure(snapshot: Path, base_run: Path, spec: dict, seed: int) -> dict:
    """KL from the base, parameter change and per-skill profile of one kept policy."""
    from hlsm.checkpoint import load_policy, read_config
    from hlsm.evaluate import evaluate
    from hlsm.model import HLSM
    from hlsm.sft import make_split
    from probes.drift import by_layer, output_kl, param_stats

    split = make_split(spec)
    base, model = load_policy(base_run)[0], load_policy(snapshot)[0]
    sft = read_config(base_run)  # the trace format every run of the unit was trained in
    fmt, gran = sft.get("fmt", "values"), sft.get("granularity", 1)
    items = [ex for s in ("seen", "rl_prompts", "unseen")
             for ex in HLSM(support=split.support(s), seed=seed, fmt=fmt, granularity=gran,
                            stream=drift_stream(s)).sample(N_KL)]
    layers = by_layer(param_stats(model, base))
    rows = evaluate(model, split, PROFILE_SUPPORTS, n=N_PROFILE, seed=seed, fmt=fmt, granularity=gran,
                    by=("all", "module"))
    return {"kl": output_kl(base, model, items),
            "rel_change": float(np.mean([r["rel_change"] for r in layers])),
            "profile": [{"support": r["support"], "by": r["by"], "group": r["group"], "n": r["n"],
                         "answer": r["answer"], "step": r["step"]} for r in rows]}


def collect(a) -> list[dict]:
    p = plans(a)
    bases = {k: d for k, d in zip([k for k in p if k[1] == "sft"],
                                  run_all([("sft", p[k][1]) for k in p if k[1] == "sft"], a.runs, a.workers))}
    later = [k for k in p if k[1] != "sft"]
    for k in later:
        p[k][1].init = str(bases[(k[0], "sft")])
    dirs = dict(zip(later, run_all([("grpo" if p[k][0] == "grpo" else "sft", p[k][1]) for k in later], a.runs,
                                   a.workers, snapshot_every=a.every)))
    rows = []
    for (u, name), run in dirs.items():
        snaps = snapshots(run)
        if not snaps:
            raise RuntimeError(f"{run} kept no policies: delete it to retrain with snapshots")
        spec = dict(protocol.PRESETS[a.preset]["split"], partition_seed=u[0])
        for step, path in snaps.items():
            m = cached_json(run, "fig6", {"step": step, "n_kl": N_KL, "n_profile": N_PROFILE, "seed": u[1]},
                            measure, path, bases[(u, "sft")], spec, u[1])
            skills = {(r["support"], r["group"]): r["step"] for r in m["profile"] if r["by"] == "module"
                      and r["group"] != "chain"}
            overall = {r["support"]: r["answer"] for r in m["profile"] if r["by"] == "all"}
            row = {"split": u[0], "seed": u[1], "condition": name, "step": step, "kl": m["kl"],
                   "rel_change": m["rel_change"], "run": run.name}
            for s in PROFILE_SUPPORTS:
                prof = [v for (sup, _), v in skills.items() if sup == s]
                row[f"{s}_answer"] = overall.get(s)
                row[f"{s}_skill_min"] = min(prof) if prof else None
                row.update({f"{s}_skill[{g}]": v for (sup, g), v in skills.items() if sup == s})
            rows.append(row)
    # profile drift: mean absolute change of the per-skill step accuracy from the same unit's step 0
    start = {(r["split"], r["seed"], r["condition"]): r for r in rows if r["step"] == 0}
    for r in rows:
        r0 = start[(r["split"], r["seed"], r["condition"])]
        for s in PROFILE_SUPPORTS:
            keys = [k for k in r if k.startswith(f"{s}_skill[")]
            r[f"{s}_profile_drift"] = float(np.mean([abs(r[k] - r0[k]) for k in keys])) if keys else None
    return rows


MEASURES = ("kl", "rel_change", "seen_profile_drift", "unseen_profile_drift", "seen_skill_min", "unseen_skill_min",
            "seen_answer", "unseen_answer")


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for name in CONDITIONS:
        for step in sorted({r["step"] for r in rows if r["condition"] == name}):
            sel = [r for r in rows if r["condition"] == name and r["step"] == step]
            row = {"condition": name, "step": step}
            for k in MEASURES:
                row[f"{k}_mean"], row[f"{k}_ci95"], row["n"] = mean_ci([r.get(k) for r in sel])
            out.append(row)
    return out


def paired_final(rows: list[dict]) -> dict:
    """GRPO minus control at the last kept step, paired by unit, per measure."""
    last = max(r["step"] for r in rows)
    val = {(r["split"], r["seed"], r["condition"]): r for r in rows if r["step"] == last}
    units = sorted({(s, d) for s, d, _ in val})
    out = {}
    for k in MEASURES:
        diffs = [val[(*u, "grpo")][k] - val[(*u, "control")][k] for u in units
                 if (*u, "grpo") in val and (*u, "control") in val]
        m, h, n = mean_ci(diffs)
        out[k] = {"mean": m, "ci95": h, "n": n}
    return {"step": last, "grpo_minus_control": out}


def plot(summary: list[dict], rows: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("kl", "KL(base || policy), nats/token"), ("rel_change", "relative parameter change"),
              ("seen_profile_drift", "per-skill profile drift: seen"),
              ("unseen_profile_drift", "per-skill profile drift: unseen"),
              ("seen_skill_min", "weakest skill's step accuracy: seen"),
              ("unseen_answer", "answer accuracy: unseen")]
    fig, axes = panel_grid(len(panels) + 1, (4.2, 3.3))  # three to a row: readable ~1,000 px wide
    colors = {"grpo": "tab:blue", "control": "tab:green"}
    for ax, (k, title) in zip(axes, panels):
        for name in CONDITIONS:
            pts = [r for r in summary if r["condition"] == name]
            xs = [p["step"] for p in pts]
            ys = np.array([p[f"{k}_mean"] for p in pts], float)
            hs = np.nan_to_num(np.array([p[f"{k}_ci95"] for p in pts], float))
            ax.plot(xs, ys, color=colors[name], marker="o", ms=3, label=CONDITIONS[name])
            ax.fill_between(xs, ys - hs, ys + hs, color=colors[name], alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL (or control) step")
    ax = axes[-1]  # the final per-skill profile change (unseen), mean over units
    last = max(r["step"] for r in rows)
    skills = sorted({k[len("unseen_skill["):-1] for r in rows for k in r if k.startswith("unseen_skill[")})
    w = 0.4
    for j, name in enumerate(CONDITIONS):
        d = []
        for sk in skills:
            k = f"unseen_skill[{sk}]"
            start = {(r["split"], r["seed"]): r[k] for r in rows if r["condition"] == name and r["step"] == 0}
            d.append(np.mean([r[k] - start[(r["split"], r["seed"])] for r in rows
                              if r["condition"] == name and r["step"] == last]))
        ax.barh(np.arange(len(skills)) + (j - 0.5) * w, d, w, color=colors[name])
    ax.set_yticks(range(len(skills)), skills, fontsize=9)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("change in step accuracy (mean over units, no interval)")
    ax.set_title(f"unseen per-skill change at step {last}", fontsize=10)
    n = max((r["n"] for r in summary), default=0)
    fig.suptitle("Drift along training from the same SFT base: GRPO vs labelled continued SFT\n"
                 f"{interval_note(n, band='bands')}", fontsize=11)
    fig.tight_layout()
    legend_below(fig, len(CONDITIONS))
    save_figure(fig, stem)
    plt.close(fig)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.fig6", __doc__, protocol.PRESETS)
    ap.add_argument("--every", type=int, default=0, help="keep a policy every this many steps (0: steps / 5)")
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    a.every = a.every or max(1, protocol.PRESETS[a.preset]["grpo"]["steps"] // 5)
    t0 = time.time()
    rows = collect(a)
    summary = summarize(rows)
    final = paired_final(rows)
    out = Path(a.out)  # resolved by output_dir after parsing
    write_csv(summary, out / "fig6.csv")
    write_csv(rows, out / "fig6_units.csv")
    plot(summary, rows, out / "fig6")
    write_json({"figure": "fig6", "args": vars(a), "seeds": a.seeds, "wall_s": time.time() - t0,
                "provenance": provenance(), "runs": sorted({r["run"] for r in rows}), "n_kl": N_KL,
                "n_profile": N_PROFILE, "summary": summary, "final": final}, out / "fig6.json")
    for r in summary:
        print(f"{r['condition']:>8} step {r['step']:4d}: " + "  ".join(
            f"{k} {r[f'{k}_mean']:.4f} ± {r[f'{k}_ci95']:.4f}" for k in MEASURES[:4]))
    for k, v in final["grpo_minus_control"].items():
        print(f"grpo − control at step {final['step']}: {k:>22} {v['mean']:+.4f} ± {v['ci95']:.4f} (n={v['n']})")
    print(f"wall {time.time() - t0:.0f} s -> {out / 'fig6.png'}")
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
