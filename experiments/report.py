"""What every figure writes beside its numbers: intervals over seeds, provenance, CSV/JSON files."""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
from pathlib import Path


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the two-sided Student-t interval, n); half-width nan when n < 2."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(xs) / n
    if n < 2:
        return mean, float("nan"), n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n), n


def git_hash() -> str:
    """HEAD of the repository, "+dirty" when tracked files differ from it, or "unknown"."""
    from hlsm.checkpoint import git_info

    info = git_info(Path(__file__).resolve().parent.parent)
    return "unknown" if info["git_hash"] is None else info["git_hash"] + ("+dirty" if info["git_dirty"] else "")


def provenance() -> dict:
    """Git hash, device, threads and package versions of this process."""
    import numpy
    import torch

    return {
        "git": git_hash(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__},
    }


def write_csv(rows: list[dict], path) -> None:
    """``hlsm.evaluate.write_csv`` into a folder made if needed."""
    from hlsm.evaluate import write_csv as write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write(rows, path)


def write_json(obj: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


COMMITTED = Path("paper_figures")  # where the committed figures live
COMMITTED_PRESETS = ("cpu",)  # presets whose figures may land there by default
_preset = {"name": None}  # the preset of the figure being made (save_figure marks non-committed ones)


def output_dir(out: str | None, preset: str) -> Path:
    """``out`` if given, else paper_figures/ for a committed preset and runs/figures-<preset>/ for
    any other, so a smoke run never overwrites a committed figure."""
    _preset["name"] = preset
    if out:
        return Path(out)
    return COMMITTED if preset in COMMITTED_PRESETS else Path("runs") / f"figures-{preset}"


def figure_parser(prog: str, doc: str, presets=("smoke", "cpu")):
    """The flags every figure takes: --preset (one of ``presets``), --seeds, --splits, --out, --runs,
    --workers, --threads (of the study's own process), --launcher and --ray-address (where the jobs run,
    ``experiments.launch``; applied as they are parsed). Errors are one line (``hlsm.cli.Parser``)."""
    from hlsm.cli import Parser, add_threads, non_negative

    class FigureParser(Parser):
        def parse_args(self, args=None, namespace=None):
            from experiments import launch

            ns = super().parse_args(args, namespace)
            try:
                launch.use(ns.launcher, ns.ray_address, ns.workers)
            except ValueError as e:
                self.error(str(e))
            return ns

    ap = FigureParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("--preset", default="cpu", choices=list(presets),
                    help="run sizes and regime (default: cpu)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 1], help="composition partition seeds")
    ap.add_argument("--out", default=None, help="output folder (default: paper_figures/ for the cpu preset, "
                                                "runs/figures-<preset>/ for any other)")
    ap.add_argument("--runs", default="runs", help="run cache root (shared by all figures; on a cluster, a path "
                                                   "every node sees)")
    ap.add_argument("--workers", type=non_negative, default=0,
                    help="parallel single-thread runs (0: one per core); with --launcher ray and no "
                         "--ray-address, the CPUs of the Ray runtime started here")
    ap.add_argument("--launcher", default="local", choices=["local", "ray"],
                    help="where runs and evaluations run: local (a process pool, default) or ray (one Ray task "
                         "each; pip install 'hlsm[ray]')")
    ap.add_argument("--ray-address", default=None,
                    help="with --launcher ray: 'auto' (the cluster this node is part of) or ray://host:port; "
                         "default: start a Ray runtime on this machine")
    add_threads(ap)
    return ap


def run_cli(main) -> int:
    """A study's ``__main__``: ``main()``'s exit status, or 1 with the failed runs named, one per line,
    when some failed (``experiments.launch.RunsFailed``): no traceback."""
    import sys

    from experiments.launch import RunsFailed

    try:
        return main()
    except RunsFailed as e:
        print(f"{Path(sys.argv[0]).stem}: {e}", file=sys.stderr)
        return 1


def partial_stem(figure: str, chosen, every) -> str:
    """The file stem of a figure run on some of its parts (panels, sources): ``figure`` when all of
    ``every`` ran, else ``figure_<part>_<part>``, so a partial run never overwrites the full files."""
    chosen = list(dict.fromkeys(chosen))
    return figure if set(chosen) == set(every) else "_".join([figure, *chosen])


def grpo_regime(rows: list[dict]) -> list[dict]:
    """Per GRPO condition: mean and 95% t-interval over units of its first-step reward (p0 on its
    prompts), its last rewards and its tied-group fraction. ``rows``: one per (unit, condition),
    with the keys of ``experiments.protocol.grpo_stats``."""
    out = []
    for n in sorted({r["condition"] for r in rows}):
        sel = [r for r in rows if r["condition"] == n]
        row = {"condition": n}
        for key in ("reward_first", "reward_last", "zero_std_frac"):
            row[key], row[f"{key}_ci95"], row["n"] = mean_ci([r[key] for r in sel if r.get(key) is not None])
        out.append(row)
    return out


def pm(m: float | None, h: float | None, sign: str = "") -> str:
    """A table cell in %: "mean ± half-width", "—" for no value, "mean (1 unit)" when there is no
    interval (one unit); ``sign="+"`` for a difference."""
    if m is None or m != m:
        return "—"
    if h is None or h != h:  # mean_ci gives no half-width for a single unit: say so in words
        return f"{100 * m:{sign}.1f} (1 unit)"
    return f"{100 * m:{sign}.1f} ± {100 * h:.1f}"


def interval_note(n: int, what: str = "(split, seed) units", band: str = "intervals") -> str:
    """The part of a figure title that says what its error bars are: "mean over 3 (split, seed)
    units, 95% t-intervals", or that there are none when one unit gives no interval."""
    if n < 2:
        return "1 unit, no interval" if n == 1 else "no units"
    return f"mean over {n} {what}, 95% t-{band}"


def paired(rows: list[dict], cond: str, ref: str, key: str) -> tuple[float, float, int]:
    """Mean and 95% CI over units of ``cond - ref`` on ``key`` (rows: split, seed, condition, key...)."""
    val = {(r["split"], r["seed"], r["condition"]): r[key] for r in rows if r.get(key) is not None}
    units = sorted({(r["split"], r["seed"]) for r in rows})
    both = [u for u in units if (*u, cond) in val and (*u, ref) in val]
    return mean_ci([val[(*u, cond)] - val[(*u, ref)] for u in both])


def save_figure(fig, stem) -> None:
    """PNG and PDF of ``fig``; a figure of a non-committed preset says so on it."""
    stem = Path(stem)
    if _preset["name"] and _preset["name"] not in COMMITTED_PRESETS:
        fig.text(0.5, 0.5, f"preset {_preset['name']!r}: a pipeline check, not a result", ha="center",
                 va="center", fontsize=22, color="tab:red", alpha=0.35, rotation=20)
    stem.parent.mkdir(parents=True, exist_ok=True)
    # bbox "tight": the saved image grows to hold every label, title and outside legend, none cut off
    fig.savefig(stem.with_suffix(".png"), dpi=130, bbox_inches="tight")
    # no creation date: re-drawing the same numbers gives the same bytes (PNG carries none by default)
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})


README_COLUMNS = 3  # panels per row at most: a README shows a figure ~1,000 px wide, so ~330 px a panel


def panel_grid(n: int, size: tuple[float, float] = (4.2, 3.4), ncols: int = README_COLUMNS, **kw):
    """A figure of ``n`` panels, ``ncols`` to a row (each ``size`` inches): (fig, the n axes in
    reading order). Unused cells of the last row are hidden."""
    import matplotlib.pyplot as plt

    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_below(fig, ncol: int = 3, handles=None) -> None:
    """One legend for every panel, under the figure where it covers no data (call after
    tight_layout; save_figure's tight box makes room for it). Without ``handles``, the labelled
    artists of all panels, each label once."""
    if handles is None:
        seen = {}
        for ax in fig.axes:
            for h, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, h)
        handles = list(seen.values())
        labels = list(seen)
    else:
        labels = [h.get_label() for h in handles]
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=ncol, frameon=False)
