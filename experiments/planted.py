"""The planted identification test: two skills SFT only ever shows together, beside an identifiable twin.

    python -m experiments.planted [--preset tiny|cpu] [--seeds 0 1 2] [--formats explicit answer]

``hlsm.planted_split``: SFT sees every atom, L = 2 and L = 3 chain of four *other* skills, and
nine compositions using the *pair* (a, b) = (rotate_left, reverse). In ``together`` a and b only
ever appear side by side (a first), so their effects are confounded and ``hlsm.identify`` finds
neither identified; its twin ``apart`` has as many compositions, four of which use a or b without
the other, and identifies both. The question, for theory against experiment: on the 16 L = 2
chains that use a or b beside another skill (``separate``; no run trained on any) does the trained
model fail where the checker says "unidentified" and succeed where it says "identified"?

Both supports are trained (SFT only: the checker is about what a support identifies) in two trace
formats: ``explicit``, the toolkit's (every step's module tokens and value are written out), and
``answer`` (the final value only), the observation the checker's algebra assumes (a composition is
seen only through its total). Per (support, format): mean greedy accuracy over seeds with 95%
t-intervals on ``seen`` (the SFT compositions, fresh inputs), ``separate`` and ``swapped`` ((b, a)),
the paired difference apart − together (over seeds; on ``separate`` and ``swapped`` also item by
item, their supports being the same in both splits, while ``seen`` differs), and per target the
checker's calls (``module``: identified and interfaces covered; ``local``: Theorem 3.4's witnesses)
beside the run's accuracy on it. For ``explicit`` runs, a causal probe: patching step t's skill
token from a to b (or b to a) at each layer on ``separate`` items, the rate at which the step's
output follows the patched skill (``probes.causal``). Runs are cached under ``--runs``.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.engine import base_config, train_units
from experiments.report import (
    figure_parser,
    interval_note,
    legend_below,
    mean_ci,
    output_dir,
    paired,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from experiments.runs import cached_json, posthoc_eval
from hlsm.names import SEEN, SEPARATE, SWAPPED
from hlsm.support import make_split

PAIR = ("rotate_left", "reverse")  # they do not commute, and their product is no skill of the inventory
OTHERS = ("swap_pairs", "shift_up", "atbash", "swap_halves")
SUPPORTS = ("together", "apart")
FORMATS = ("explicit", "answer")
EVALS = (SEEN, SEPARATE, SWAPPED)
SUCCESS = 0.5  # a target counts as reached when the run's accuracy on it is at least this
PRESETS = {
    # seconds: a pipeline check
    "tiny": dict(sft=dict(preset="smoke", steps=30, batch_size=16, lr=3e-3, warmup_steps=5, eval_n=32,
                          model={"pos": "none"}), n_causal=8),
    # the chosen regime's model (no positions) and half its SFT budget, as fig4's bottom bases
    "cpu": dict(sft=dict(preset="cpu", steps=1500, batch_size=64, micro_batch_size=32, lr=1e-3, warmup_steps=100,
                         eval_n=256, model={"pos": "none"}), n_causal=64),
}


def split_spec(support: str) -> dict:
    return {"factory": "planted", "pair": list(PAIR), "others": list(OTHERS), "together": support == "together"}


def checker_calls(support: str) -> dict[str, dict]:
    """composition name -> the checker's calls on each ``separate`` target (and whether the pair is
    identified), from the SFT support alone."""
    from hlsm.evaluate import composition_name
    from hlsm.identify import identify, local_support

    split = make_split(split_spec(support))
    comps = list(split.train["sft"].compositions)
    ident, local = identify(comps), local_support(comps)
    out = {}
    for target in split.eval[SEPARATE].compositions + split.eval[SWAPPED].compositions:
        r, lr = ident.reach(target), local.reach(target)
        out[composition_name(target)] = {"module_reachable": r.reachable, "local_reachable": lr.reachable,
                                         "identified": not r.unidentified, "why": r.why}
    out["_pair_identified"] = {m: ident.units[m].identified for m in PAIR}
    return out


def causal_rows(run: Path, n: int, seed: int) -> list[dict]:
    """Per (t, layer): the causal probe of patching step t's skill between a and b on ``separate`` items."""
    from hlsm.checkpoint import load_policy
    from hlsm.model import HLSM
    from hlsm.names import probe_stream
    from probes.causal import patch_step_layers

    model = load_policy(run)[0]
    split = make_split(split_spec("together"))  # the separate support is the same in both splits
    items = HLSM(support=split.eval[SEPARATE], seed=seed, fmt="explicit", stream=probe_stream(SEPARATE)).sample(8 * n)
    rows = []
    for t in (1, 2):
        exs = [ex for ex in items if ex.steps[t - 1].skill in PAIR][:n]
        res = patch_step_layers(model, exs, t, range(model.config.n_layer + 1), "skill", choices=PAIR, seed=seed)
        rows += [{"t": t, "layer": layer, **r.summary()} for layer, r in res.items()]
    return rows


def run_all_units(a) -> dict:
    p = PRESETS[a.preset]
    sft = dict(p["sft"], eval_supports=EVALS, train_supports={"sft": 1.0})  # the split's one training support
    plans = {(fmt, seed): {s: ("sft", base_config(dict(sft, fmt=fmt), split_spec(s), seed))
                           for s in SUPPORTS} for fmt in a.formats for seed in a.seeds}
    return train_units(plans, lambda name: name, a.runs, a.workers)


def main(argv=None) -> int:
    ap = figure_parser("python -m experiments.planted", __doc__, PRESETS)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    a = ap.parse_args(argv)
    a.out = str(output_dir(a.out, a.preset))
    t0 = time.time()
    p = PRESETS[a.preset]
    dirs = run_all_units(a)
    calls = {s: checker_calls(s) for s in SUPPORTS}
    rows, targets, causal = [], [], []
    for (fmt, seed), support in sorted(dirs):
        run = dirs[((fmt, seed), support)]
        tag = {"format": fmt, "seed": seed, "support": support, "run": run.name}
        per = posthoc_eval(run, split_spec(support), EVALS, p["sft"]["eval_n"], seed, by=("all", "composition"))
        for r in per:
            if r["by"] == "all":
                rows.append({**tag, "split": fmt, "condition": support, "eval": r["support"],
                             "accuracy": float(r["answer"])})
            elif r["support"] in (SEPARATE, SWAPPED):
                c = calls[support][r["group"]]
                targets.append({**tag, "eval": r["support"], "target": r["group"], "n": int(r["n"]),
                                "accuracy": float(r["answer"]), "reached": float(r["answer"]) >= SUCCESS,
                                **{k: c[k] for k in ("identified", "module_reachable", "local_reachable", "why")}})
        if fmt == "explicit":
            res = cached_json(run, "planted-causal", {"n": p["n_causal"], "seed": seed}, causal_rows, run,
                              p["n_causal"], seed)
            causal += [{**tag, **r} for r in res]
    summary = summarize(rows, targets, causal, a.formats)
    out = Path(a.out)
    write_csv(summary, out / "planted.csv")
    write_csv(targets, out / "planted_targets.csv")
    write_csv(causal, out / "planted_causal.csv")
    plot(summary, a.formats, out / "planted")
    write_json({"figure": "planted", "args": vars(a), "wall_s": time.time() - t0, "provenance": provenance(),
                "pair": PAIR, "others": OTHERS, "pair_identified": {s: calls[s]["_pair_identified"] for s in SUPPORTS},
                "configs_of_first_unit": {s: dirs[((a.formats[0], a.seeds[0]), s)].name for s in SUPPORTS},
                "summary": summary}, out / "planted.json")
    for s in SUPPORTS:
        print(f"checker on {s:>8}: pair identified {calls[s]['_pair_identified']}; separate targets reachable "
              f"module {sum(v['module_reachable'] for k, v in calls[s].items() if k != '_pair_identified')}, "
              f"local {sum(v['local_reachable'] for k, v in calls[s].items() if k != '_pair_identified')} "
              f"of {len(calls[s]) - 1}")
    for r in summary:
        if r["kind"] == "accuracy":
            print(f"{r['format']:>8} {r['support']:>8} {r['eval']:>8}: {100 * r['mean']:5.1f} ± {100 * r['ci95']:.1f}"
                  + (f"  (apart − together {100 * r['diff_mean']:+.1f} ± {100 * r['diff_ci95']:.1f})"
                     if r["support"] == "apart" else ""))
        elif r["kind"] == "by_call":
            print(f"{r['format']:>8} {r['support']:>8} separate targets the checker calls {r['call']}: "
                  f"{r['n']} (run, target) pairs, reached {100 * r['mean']:.0f}%")
        else:
            print(f"{r['format']:>8} {r['support']:>8} causal: step output follows the patched pair skill "
                  f"{100 * r['mean']:.0f}% at the best layer ({r['layer']}) over {r['n']} seeds")
    print(f"wall {time.time() - t0:.0f} s -> {out / 'planted.png'}")
    return 0


def summarize(rows: list[dict], targets: list[dict], causal: list[dict], formats) -> list[dict]:
    out = []
    for fmt in formats:
        sel = [r for r in rows if r["format"] == fmt]
        for s in SUPPORTS:
            for ev in EVALS:
                m, h, n = mean_ci([r["accuracy"] for r in sel if r["support"] == s and r["eval"] == ev])
                d = paired([r for r in sel if r["eval"] == ev], "apart", "together", "accuracy")
                out.append({"kind": "accuracy", "format": fmt, "support": s, "eval": ev, "mean": m, "ci95": h,
                            "n": n, "diff_mean": d[0], "diff_ci95": d[1]})
            ts = [t for t in targets if t["format"] == fmt and t["support"] == s and t["eval"] == SEPARATE]
            for call in ("module_reachable", "module_unreachable", "local_reachable", "local_unreachable"):
                key, want = call.rsplit("_", 1)[0] + "_reachable", call.endswith("_reachable")
                hit = [t["reached"] for t in ts if t[key] == want]
                out.append({"kind": "by_call", "format": fmt, "support": s, "eval": SEPARATE, "call": call,
                            "n": len(hit), "mean": sum(hit) / len(hit) if hit else float("nan")})
            cs = [c for c in causal if c["format"] == fmt and c["support"] == s]
            if cs:  # the layer where following is likeliest, averaged over seeds and both steps
                by_layer = {}
                for c in cs:
                    by_layer.setdefault(c["layer"], {}).setdefault(c["seed"], []).append(c["follow"])
                means = {layer: [sum(v) / len(v) for v in seeds.values()] for layer, seeds in by_layer.items()}
                best = max(means, key=lambda layer: sum(means[layer]) / len(means[layer]))
                m, h, n = mean_ci(means[best])
                out.append({"kind": "causal", "format": fmt, "support": s, "eval": SEPARATE, "layer": best,
                            "mean": m, "ci95": h, "n": n})
    return out


def plot(summary: list[dict], formats, stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(formats), figsize=(max(6.0, 4.5 * len(formats)), 3.8), squeeze=False)
    for ax, fmt in zip(axes[0], formats):
        for j, s in enumerate(SUPPORTS):
            vals = [next(r for r in summary if r["kind"] == "accuracy" and r["format"] == fmt and r["support"] == s
                         and r["eval"] == ev) for ev in EVALS]
            ax.bar([i + (j - 0.5) * 0.38 for i in range(len(EVALS))], [100 * v["mean"] for v in vals], 0.38,
                   yerr=[100 * (0 if v["ci95"] != v["ci95"] else v["ci95"]) for v in vals], capsize=2,
                   label={"together": "pair only together (unidentified)", "apart": "twin (identified)"}[s])
        ax.set_xticks(range(len(EVALS)), ["SFT compositions", "separating L = 2", "pair swapped"], fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{fmt} traces", fontsize=10)
    n = max((r["n"] for r in summary if r["kind"] == "accuracy"), default=0)
    # two lines: one format makes a narrow figure, and a one-line title would be cut at its sides
    fig.suptitle("Planted test: skills SFT only shows together vs an identifiable twin\n"
                 f"{interval_note(n, 'seeds')}", fontsize=11)
    fig.tight_layout()
    legend_below(fig, 2)
    save_figure(fig, stem)
    plt.close(fig)


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
