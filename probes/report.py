"""Probe report of a run: do its layers identify the latent skills and routings?

    python -m probes.report --run runs/sft [--base runs/other] [--n 256] [--out probes.png]

Loads the run's policy and split (an SFT run's config.split; a GRPO run's config.split or that of
its SFT init), samples ``--n`` items from the split's ``seen`` and ``unseen`` evaluation supports
(stream ``probe:<support>``), captures the residual stream at ``--kind`` positions
(probes.activations) and prints, per layer, for skills and for routings: probe accuracy on seen
compositions (held-out examples) and on unseen ones (probe trained on seen), the majority
baseline, the control task accuracy and selectivity, and the identification score, beside the
same probe on a random-init model of the same shape. With ``--causal`` (default) it patches each
step's skill token with a twin's at every layer (probes.causal); with ``--base`` it adds drift
from the base run (probes.drift). A heatmap goes to ``--out`` (default RUN/probes.png).

    python -m probes.report --replot REPORT.txt --out probes.png

re-draws the heatmap from a saved report (the text this command printed), loading no model.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from hlsm.cli import Parser, add_threads
from hlsm.names import probe_stream
from probes.activations import KINDS


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m probes.report", description=__doc__.split("\n")[0])
    p.add_argument("--run", help="run directory (SFT or GRPO) with config.json and policy.pt")
    p.add_argument("--replot", default=None, metavar="REPORT.txt",
                   help="only re-draw the heatmap (to --out) from a saved report's printed tables; loads no run")
    p.add_argument("--base", default=None, help="a second run to measure drift from (e.g. the SFT init)")
    p.add_argument("--n", type=int, default=256, help="items per support (seen, unseen); default 256")
    p.add_argument("--out", default=None, help="heatmap PNG path (default RUN/probes.png)")
    p.add_argument("--kind", default="before", choices=KINDS, help="positions to probe (default before)")
    p.add_argument("--window", type=int, default=2, choices=(1, 2),
                   help="control task surface type: 1 token, 2 previous token + token (default 2)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the probes (default 1.0)")
    p.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                   help="patch each step's skill token with a twin's at every layer (default on)")
    p.add_argument("--seed", type=int, default=0, help="items, control labels, holdout and random init")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    add_threads(p)
    return p


def _check_run(p, flag: str, run: str) -> Path:
    path = Path(run)
    if not path.is_dir():
        p.error(f"{flag} {run}: no such run directory")
    if not (path / "config.json").exists():
        p.error(f"{flag} {run}: not a run directory (no config.json)")
    if not (path / "policy.pt").exists() and not (path / "checkpoint.pt").exists():
        p.error(f"{flag} {run}: holds neither policy.pt nor checkpoint.pt (unfinished run?)")
    return path


def _resolve_init(run: Path, init: str) -> Path:
    """An init path as recorded (relative to the working directory then) or relative to the run's parent."""
    for cand in (Path(init), run.parent / init, run.parent / Path(init).name):
        if (cand / "config.json").exists():
            return cand
    raise ValueError(f"run {run}: its init run {init!r} was not found")


def run_data(run: Path):
    """(split, fmt, granularity, training support names) of an SFT or GRPO run directory.

    Training supports are collected along the init chain (continued SFT, GRPO), so "seen" means
    seen by any training stage.
    """
    from hlsm.checkpoint import read_config
    from hlsm.sft import make_split

    cfg = read_config(run)
    if "rl_support" in cfg:  # GRPO: format and (by default) split come from the SFT init
        init = _resolve_init(run, cfg["init"])
        split, fmt, g, names = run_data(init)
        if cfg.get("split"):
            split = make_split(cfg["split"])
        names = names | {cfg["rl_support"]}
        if cfg.get("replay_fraction", 0) > 0:
            names |= {cfg["replay_support"]}
        return split, fmt, g, names
    split = make_split(cfg["split"])
    names = set(cfg.get("train_supports", {"sft": 1.0}))
    if cfg.get("init"):
        names |= run_data(_resolve_init(run, cfg["init"]))[3]
    return split, cfg.get("fmt", "values"), cfg.get("granularity", 1), names


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _table(header: list[str], rows: list[list]) -> None:
    """Print rows under a header: numbers as %.3f, the first column left-aligned, the rest right-aligned."""
    cells = [[v if isinstance(v, str) else _fmt(v) for v in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *cells)]
    for row in [header, *cells]:
        print(f"{row[0]:<{widths[0]}}  " + " ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])))


def _get(rows: list[dict], ev: str, layer: str, key: str):
    return next(r[key] for r in rows if r["eval"] == ev and r["layer"] == layer)


def probe_tables(acts, rand_acts, window: int, C: float, seed: int) -> dict:
    """{target: {"rows": probe_report rows, "rand": random-init rows} or None} for skill and routing."""
    from probes.linear import probe_report

    out = {}
    for target in ("skill", "routing"):
        if len(np.unique(acts.labels(target)[acts.seen])) < 2:
            out[target] = None  # one class (e.g. a chain-only split): nothing to decode
            continue
        out[target] = {"rows": probe_report(acts, target, window, C, seed),
                       "rand": probe_report(rand_acts, target, window, C, seed)}
    return out


# (header, eval, key) of the printed columns; "rand_" columns come from the random-init model
COLUMNS = (
    ("acc_seen", "seen", "acc"), ("acc_unseen", "unseen", "acc"), ("majority", "unseen", "majority"),
    ("control", "unseen", "control"), ("select", "unseen", "selectivity"), ("id_seen", "seen", "ident"),
    ("id_unseen", "unseen", "ident"), ("rand_acc", "unseen", "acc"), ("rand_ctrl", "unseen", "control"),
    ("rand_id", "unseen", "ident"),
)


def print_tables(tables: dict, acts, kind: str) -> None:
    from hlsm.modules import ROUTING_NAMES, SKILL_NAMES

    for target, t in tables.items():
        if t is None:
            names = SKILL_NAMES if target == "skill" else ROUTING_NAMES
            only = ", ".join(sorted({names[i] for i in acts.labels(target)}))
            print(f"\n{target}: a single class in the data ({only}): nothing to decode")
            continue
        first, unseen = t["rows"][0], next(r for r in t["rows"] if r["eval"] == "unseen")
        print(f"\n{target} at '{kind}' positions: {first['classes']} classes; seen rows train/test "
              f"{first['n_train']}/{first['n_test']}; unseen rows {unseen['n_test']} "
              f"(probe trained on all seen rows)")
        rows = [[layer] + [_get(t["rand"] if h.startswith("rand_") else t["rows"], ev, layer, key)
                           for h, ev, key in COLUMNS] for layer in acts.layer_names]
        _table(["layer"] + [h for h, _, _ in COLUMNS], rows)
    print("\nacc_unseen, majority, control, select, id_unseen: probe trained on seen compositions, "
          "tested on unseen ones;\nselect = acc - control (Hewitt & Liang control task on surface types); "
          "id: identification score, chance-corrected\nHungarian-matched accuracy (0 chance, 1 perfect; "
          ">= 0.9 counts as identified); rand_*: random-init model")


# plain words for every heatmap row and layer name, printed under the figure (docs/probes.md)
MEANINGS = (
    ("acc_seen", "probe accuracy on held-out examples of compositions seen in training"),
    ("acc_unseen", "probe trained on seen compositions, accuracy on unseen ones"),
    ("control", "accuracy of the same probe on a control task: random labels fixed per surface token pair "
                "(Hewitt & Liang)"),
    ("select", "selectivity = acc_unseen − control: what memorising surface tokens does not explain"),
    ("id_seen, id_unseen", "identification score: chance-corrected accuracy after the best one-to-one "
                           "matching of classes (0 chance, 1 perfect; ≥ 0.9: identified)"),
    ("rand_acc, rand_ctrl, rand_id", "acc_unseen, control and id_unseen of a random-init model of the same "
                                     "shape: the baseline to beat"),
    ("emb, blockN, ln_f", "token + position embedding; residual stream after block N; after the final norm"),
)
HEAT_ROWS = tuple(h for h, _, key in COLUMNS if key != "majority")  # majority goes into the panel title
CMAP, VMIN, VMAX = "viridis", 0.0, 1.0  # every measure is a rate or score in [0, 1] (selectivity can dip below)
DARK_BELOW = 0.6  # cells darker than this get white text


def heatmap_data(tables: dict, layer_names) -> dict:
    """{target: {"classes": n, "rows": {measure: [value per layer]}} or None} of ``probe_tables``."""
    out = {}
    for target, t in tables.items():
        if t is None:
            out[target] = None
            continue
        cols = {h: [_get(t["rand"] if h.startswith("rand_") else t["rows"], ev, layer, key) for layer in layer_names]
                for h, ev, key in COLUMNS}
        out[target] = {"classes": t["rows"][0]["classes"], "rows": cols}
    return out


def read_report(text: str) -> tuple[dict, list[str], dict]:
    """The probe tables of a saved report (what ``main`` printed) as ``heatmap_data`` gives them, to
    re-draw its heatmap without the run: (about: run, split, kind where the text names them,
    layer names, data). Values are the printed ones (3 decimals); "-" is NaN."""
    about, layers, data = {}, [], {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("run ") and "(split " in line:
            about["run"] = line.split()[1]
            about["split"] = line.split("(split ")[1].split(",")[0]
        head = re.match(r"(\w+) at '(\w+)' positions: (\d+) classes", line)
        if head:
            target, about["kind"] = head.group(1), head.group(2)
            header = lines[i + 1].split()
            rows = []
            for row in lines[i + 2:]:
                if not row.strip():
                    break
                rows.append(row.split())
            layers = [r[0] for r in rows]
            cols = {h: [float("nan") if r[k] == "-" else float(r[k]) for r in rows]
                    for k, h in enumerate(header) if k > 0}
            data[target] = {"classes": int(head.group(3)), "rows": cols}
        single = re.match(r"(\w+): a single class in the data", line)
        if single:
            data[single.group(1)] = None
    return about, layers, data


def save_heatmap(data: dict, layer_names, path: Path, title: str, digits: int = 2) -> None:
    """One heatmap per target (skill, routing) of ``heatmap_data``: measures x layers, each cell
    annotated with its value to ``digits`` decimals, a colour bar, and the meaning of every row
    and layer name under the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = [(k, d) for k, d in data.items() if d is not None]
    dead = [k for k, d in data.items() if d is None]
    n = max(1, len(live))
    fig, axes = plt.subplots(1, n, figsize=(max(8.0, 1.1 * len(layer_names) * n + 3), 5.2), squeeze=False,
                             layout="constrained")  # room for the two-line title and the colour bar
    image = None
    for ax, (target, d) in zip(axes[0], live):
        grid = np.array([d["rows"][h] for h in HEAT_ROWS], dtype=float)
        image = ax.imshow(np.nan_to_num(grid, nan=VMIN), vmin=VMIN, vmax=VMAX, cmap=CMAP, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.{digits}f}", ha="center", va="center", fontsize=9,
                    color="white" if np.nan_to_num(v) < DARK_BELOW else "black")
        ax.set_xticks(range(len(layer_names)), layer_names)
        ax.set_yticks(range(len(HEAT_ROWS)), HEAT_ROWS)
        ax.set_xlabel("layer (representation probed)")
        if ax is axes[0][0]:  # the panels share their rows
            ax.set_ylabel("probe measure")
        majority = d["rows"].get("majority", [float("nan")])[0]
        ax.set_title(f"{target}: {d['classes']} classes, majority baseline {majority:.{digits}f}")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="accuracy / score (0-1)", extend="min", fraction=0.04)
    else:
        axes[0][0].text(0.5, 0.5, "nothing to decode (single class)", ha="center")
        axes[0][0].set_axis_off()
    notes = [f"{name}: {meaning}" for name, meaning in MEANINGS]
    if dead:
        notes.append(f"not shown: {', '.join(dead)} (a single class in the data, nothing to decode)")
    # the legend of the row names, under the axes (bbox_inches="tight" makes room for it)
    fig.text(0.02, -0.02, "\n".join(notes), ha="left", va="top", fontsize=8.5, wrap=True)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def heatmap_title(run: str, split: str | None, kind: str) -> str:
    """The heatmap's title: what it asks, of which run (its folder name, not the full path)."""
    on = f"run {Path(run).name}" + (f", split {split}" if split else "")
    return f"Which layers let a linear probe read each step's module?\n{on}; '{kind}' positions"


def replot(text_path: Path, out: Path) -> int:
    """Re-draw a saved report's heatmap from its text alone: no model is loaded, no number changed."""
    about, layers, data = read_report(text_path.read_text())
    if not data:
        raise ValueError(f"{text_path}: no probe tables found (is it the output of python -m probes.report?)")
    # 3 decimals: exactly what the text holds (rounding them again to 2 could move a value)
    save_heatmap(data, layers, out, heatmap_title(about.get("run", str(text_path)), about.get("split"),
                                                  about.get("kind", "before")), digits=3)
    print(f"heatmap re-drawn from {text_path} -> {out}")
    return 0


def print_causal(model, examples, seed: int) -> None:
    """Patch each step's module tokens with a twin's (another skill) at every layer; print the rates."""
    from probes.causal import patch_step_layers

    print("\ncausal: step t's module tokens in the prompt patched with a twin's (other skill), unseen items")
    rows, layers = [], range(model.config.n_layer + 1)
    depth = min(ex.depth for ex in examples)
    res = {t: patch_step_layers(model, examples, t, layers, "skill", seed=seed) for t in range(1, depth + 1)}
    for layer in layers:
        for t in range(1, depth + 1):
            s = res[t][layer].summary()
            name = "emb" if layer == 0 else f"block{layer}"
            rows.append([name, str(t), str(s["n"]), s["follow"], s["stay"], s["base_acc"], s["twin_acc"],
                         s["interchange"]])
    _table(["layer", "t", "n", "follow", "stay", "base_acc", "twin_acc", "interchange"], rows)
    print("follow / stay: the patched step's output is the twin's / the original's (items where the two "
          "differ);\ninterchange: follow among items the unpatched model gets right on both")


def print_drift(model, base, split, examples, n: int, seed: int, fmt: str, g: int) -> None:
    """Output KL, per-layer parameter change and per-module accuracy of ``model`` against ``base``."""
    from probes.drift import accuracy_profile, by_layer, output_kl, param_stats, profile_delta

    kl = output_kl(base, model, examples)
    print(f"\ndrift from base: mean per-token KL(base || run) on {len(examples)} probe items = {kl:.4f} nats")
    rows = [[r["layer"], r["norm"], r["rel_change"], r["eff_rank"], r["delta_eff_rank"]]
            for r in by_layer(param_stats(model, base))]
    _table(["layer", "norm", "rel_change", "eff_rank", "delta_eff_rank"], rows)
    supports = tuple(s for s in ("seen", "unseen") if s in split.eval)
    prof = profile_delta(accuracy_profile(base, split, supports, n, seed, fmt, g),
                         accuracy_profile(model, split, supports, n, seed, fmt, g))
    print(f"\nper-module step accuracy (greedy, {n} items per support), base -> run")
    rows = [[r["support"], r["kind"], r["module"], str(r["n"]), r["base"], r["run"], f"{r['delta']:+.3f}"]
            for r in prof]
    _table(["support", "kind", "module", "n", "base", "run", "delta"], rows)


def _check_args(p, args) -> tuple[Path, Path | None, Path]:
    """(the run, the base run or None, the heatmap path), or a usage error naming the bad flag."""
    if not args.run:
        p.error("--run is required (or --replot REPORT.txt --out PNG to re-draw a saved report's heatmap)")
    run = _check_run(p, "--run", args.run)
    base_run = _check_run(p, "--base", args.base) if args.base else None
    if args.n < 4:
        p.error(f"--n must be >= 4 (items per support), got {args.n}")
    if args.C <= 0:
        p.error(f"--C must be > 0, got {args.C}")
    out = Path(args.out) if args.out else run / "probes.png"
    if out.suffix.lower() != ".png":
        p.error(f"--out must be a .png path, got {args.out}")
    if not out.parent.is_dir():
        p.error(f"--out {args.out}: directory {out.parent} does not exist")
    return run, base_run, out


def _device(p, name: str):
    """``--device`` as a torch.device (auto: cuda if there is one), or a usage error."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    try:
        device = torch.device(device)
    except RuntimeError as e:
        p.error(f"--device {name}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {name}: CUDA is not available on this machine")
    return device


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.replot:
        if not args.out or not args.out.lower().endswith(".png"):
            p.error("--replot needs --out, a .png path")
        if not Path(args.replot).is_file():
            p.error(f"--replot {args.replot}: no such file")
        return replot(Path(args.replot), Path(args.out))
    run, base_run, out = _check_args(p, args)

    import torch

    from hlsm.checkpoint import load_policy
    from hlsm.model import HLSM
    from hlsm.policy import Policy
    from probes.activations import capture

    device = _device(p, args.device)
    try:
        split, fmt, g, names = run_data(run)
        model, _ = load_policy(run, device)
        base = load_policy(base_run, device)[0] if base_run else None
    except Exception as e:  # a broken run directory: say so instead of a traceback
        p.error(f"cannot load the run: {type(e).__name__}: {e}")
    missing = [s for s in ("seen", "unseen") if s not in split.eval]
    if missing:
        p.error(f"the run's split {split.name!r} has no eval support {missing} (have {sorted(split.eval)})")
    if base is not None and base.config != model.config:
        p.error(f"--base has another model shape ({base.config}) than --run ({model.config})")

    train = [split.train[n] for n in sorted(names) if n in split.train]
    seen = lambda comp: any(s.contains(comp) for s in train)
    items = {name: HLSM(support=split.support(name), seed=args.seed, fmt=fmt, granularity=g,
                        stream=probe_stream(name)).sample(args.n) for name in ("seen", "unseen")}
    examples = items["seen"] + items["unseen"]
    torch.manual_seed(args.seed)
    rand = Policy(model.config).to(device).eval()  # same shape, untrained
    acts = capture(model, examples, (args.kind,), seen, device=device)
    rand_acts = capture(rand, examples, (args.kind,), seen, device=device)
    if len(acts) == 0:
        p.error(f"no '{args.kind}' positions in format {fmt!r} (the answer format has no trace chunks)")
    if not acts.seen.any() or acts.seen.all():
        p.error("the probe items are all seen or all unseen: check the split's seen/unseen supports")

    print(f"run {run} (split {split.name}, format {fmt}, granularity {g}; seen = in training supports "
          f"{sorted(names)}); {args.n} items each from seen and unseen, seed {args.seed}")
    tables = probe_tables(acts, rand_acts, args.window, args.C, args.seed)
    print_tables(tables, acts, args.kind)
    if args.causal:
        print_causal(model, items["unseen"], args.seed)
    if base is not None:
        print_drift(model, base, split, examples, args.n, args.seed, fmt, g)
    save_heatmap(heatmap_data(tables, acts.layer_names), acts.layer_names, out,
                 heatmap_title(str(run), split.name, args.kind))
    print(f"\nheatmap -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
