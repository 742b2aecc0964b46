"""Re-draw saved figures from the numbers they were saved with: no run, no evaluation.

    python -m experiments.replot [--out paper_figures] [figure ...]

Every figure writes the numbers it plots beside its PNG (its JSON; per-unit rows in a CSV), so a
change of layout can reach a committed figure without its run cache: this calls the figure's
current plot function on those numbers and writes only ``<figure>.png`` and ``.pdf``. The CSVs,
JSONs and tables stay as they are. Figures whose files are missing from ``--out`` are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.report import COMMITTED, output_dir, read_csv


def _typed(path: Path) -> list[dict]:
    """CSV rows with numbers as numbers (``hlsm.evaluate.parse_cell``: what ``write_csv`` wrote)."""
    from hlsm.evaluate import parse_cell

    return [{k: parse_cell(v) for k, v in r.items()} for r in read_csv(path)]


def _fig1(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig1

    fig1.replot(out)  # from fig1.csv, as ``python -m experiments.fig1 --replot`` does


def _heldout(out: Path, stem: str, meta: dict) -> None:
    from experiments import heldout

    heldout.plot(meta["curves"], meta["figure"], out / stem)


def _fig4(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig4

    fig4.plot(meta["plotted"], out / stem)


def _fig5(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig5

    fig5.plot(meta["summary"], out / stem, meta.get("subtitle", ""))


def _fig6(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig6

    fig6.plot(meta["summary"], _typed(out / f"{stem}_units.csv"), out / stem)


def _fig7(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig7

    fig7.plot(meta["plotted"], out / stem)


def _fig8(out: Path, stem: str, meta: dict) -> None:
    from experiments import fig8

    fig8.plot(meta["summary"], _typed(out / f"{stem}_targets.csv"), out / stem)


def _planted(out: Path, stem: str, meta: dict) -> None:
    from experiments import planted

    planted.plot(meta["summary"], meta["args"]["formats"], out / stem)


def _protocol(out: Path, stem: str, meta: dict) -> None:
    from experiments import protocol

    protocol.plot(meta["summary"], out / stem)


def _compound(out: Path, stem: str, meta: dict) -> None:
    from experiments import compound, fair

    study = meta["study"]
    depth = fair.split_spec(study["preset"], study["splits"][0], study["conditions"][0])["depth"]
    compound.plot(meta["summary"], depth, out / stem)


def _fair(out: Path, stem: str, meta: dict) -> None:
    from experiments import fair

    depth = fair.split_spec(meta["study"]["preset"], meta["study"]["splits"][0])["depth"]
    rows = _typed(out / "fair.csv")
    at = [r for r in rows if r["at_plateau"]]
    summary = _typed(out / "fair_summary.csv")
    if summary:  # the claim rows' figure and curves, as report_tables drew them
        fair.plot_table(summary, depth, out / "fair")
        fair.plot_curves(at, out / "fair_curves")
    if (out / "fair_summary_all.csv").exists():
        n_at, n_units = (len({(r["split"], r["seed"]) for r in rs}) for rs in (at, rows))
        fair.plot_table(_typed(out / "fair_summary_all.csv"), depth, out / "fair_all", fair.all_units(n_at, n_units))
    if (out / "fair_grid.csv").exists():
        fair.plot_grid(_typed(out / "fair_grid.csv"), meta["chosen"], meta["lrs"], out / "fair_grid")


def _regime(out: Path, stem: str, meta: dict) -> None:
    from experiments import regime

    regime.plot(meta["summary"], regime.PRESETS[meta["study"]["preset"]]["split"], out / stem)


# file stem -> how to re-draw it from its saved numbers
FIGURES = {"fig1": _fig1, "fig2": _heldout, "fig3": _heldout, "fig4": _fig4, "fig4_top": _fig4,
           "fig4_bottom": _fig4, "fig5": _fig5, "fig5_routing": _fig5, "fig6": _fig6, "fig7": _fig7,
           "fig8": _fig8, "fig8_fig2": _fig8, "fig8_protocol": _fig8, "planted": _planted,
           "protocol": _protocol, "regime": _regime, "fair": _fair, "compound": _compound}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.replot", description=__doc__.split("\n")[0])
    ap.add_argument("figures", nargs="*", help=f"file stems to re-draw, of: {', '.join(FIGURES)} "
                                                "(default: every one whose JSON is in --out)")
    ap.add_argument("--out", default=str(COMMITTED), help="the folder of the saved figures (default paper_figures/)")
    a = ap.parse_args(argv)
    unknown = [f for f in a.figures if f not in FIGURES]
    if unknown:
        ap.error(f"no such figure: {', '.join(unknown)} (have {', '.join(FIGURES)})")
    out = Path(a.out)
    for stem in a.figures or FIGURES:
        path = out / f"{stem}.json"
        if not path.exists():
            if a.figures:
                ap.error(f"{path}: no such file")
            continue
        meta = json.loads(path.read_text())
        args = meta.get("args") or meta.get("study") or {}
        output_dir(str(out), args.get("preset", "cpu"))  # a non-committed preset keeps its mark
        FIGURES[stem](out, stem, meta)
        if stem != "fig1":  # fig1.replot says so itself
            print(f"re-drawn {out / stem}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
