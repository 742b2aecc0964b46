"""Carry a run cache to another machine through git: a study longer than a session continues there.

    python -m experiments.carry pack /work/runs_cmp2 carried/compound_chunked   # copy what the study needs
    python -m experiments.carry unpack carried/compound_chunked                  # back under its root

A machine's ``runs/`` does not outlive its session, and a study of several hours on 2 cores (the
compound regime's plateau chains, issue 31) needs more than one. ``pack`` copies every finished run of
a cache, less what no later step reads: the resumable ``checkpoint.pt`` of a finished run (its
``policy.pt`` is the finished state), lock and temporary files, and the weights of a *spent* run, one
another run of the cache has already started from and no GRPO run starts from (a plateau chain's
interior blocks; a chain's tip, a GRPO run's base and every leaf keep theirs), or, with
``--weights-for <table.csv>``, of every run the finished study's table does not name (a rate grid's
runs at the rates not chosen). Every packed run gets a
``carried.json``: its wall minutes (file times do not survive git) and whether its weights were
dropped. Such a run still counts as finished (``runs.is_finished``), and its metrics and post-hoc
caches are read as before; only loading its policy fails, naming the run.

Configs name their ``init`` by path, so the runs must go back under the root they were made in:
``unpack`` restores them there (``carry.json`` records it), never over a finished run. Runs made by
other code are unpacked with a note: that code's studies re-use them, this code's do not.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from experiments.runs import CARRIED, LOCK, code_version, minutes
from hlsm.checkpoint import CHECKPOINT, CONFIG, POLICY, read_config

MANIFEST = "carry.json"  # in a pack: the root its runs were made under, the code version, what was dropped
SKIPPED = (CHECKPOINT, LOCK)  # never packed: a finished run's resumable state, its lock


def holds_finished(d: Path) -> bool:
    """``d`` holds a finished run: its config and its weights, or a note that they were carried away."""
    return d.is_dir() and (d / CONFIG).exists() and ((d / POLICY).exists() or (d / CARRIED).exists())


def finished_runs(root: Path) -> list[Path]:
    """The run directories under ``root`` that hold a finished run."""
    return sorted(d for d in Path(root).iterdir() if holds_finished(d))


def spent(runs: list[Path]) -> set[str]:
    """Names of the runs whose weights no later step reads: some run starts from them, no GRPO run does."""
    inits = {}  # run name -> the kinds of the runs that start from it
    for d in runs:
        init = read_config(d).get("init")
        if init:
            inits.setdefault(Path(init).name, set()).add(d.name.split("-")[0])
    return {name for name, kinds in inits.items() if "grpo" not in kinds}


def named_runs(tables: list[Path]) -> set[str]:
    """The run names in the ``run`` column of study tables (a fair test's ``fair.csv`` names the runs
    its rows and its probes read)."""
    from experiments.report import read_csv

    names = set()
    for t in tables:
        rows = read_csv(t) if Path(t).is_file() else None
        if not rows or "run" not in rows[0]:
            raise ValueError(f"--weights-for {str(t)!r}: not a CSV with a 'run' column (a study's table)")
        names |= {Path(r["run"]).name for r in rows}
    return names


def pack(root: str | Path, dest: str | Path, weights_for: list[Path] = ()) -> dict:
    """Copy ``root``'s finished runs into ``dest`` (replacing it), less what ``SKIPPED`` names and the
    weights of the ``spent`` runs, or, given ``weights_for`` (study tables), of every run they do not
    name (once a study's table is written, only its rows' runs are read again); returns the manifest
    written as ``dest/carry.json``."""
    root, dest = Path(root), Path(dest)
    if not root.is_dir():
        raise ValueError(f"--root {str(root)!r}: not a directory (a run cache)")
    runs = finished_runs(root)
    drop = {d.name for d in runs} - named_runs(weights_for) if weights_for else spent(runs)
    tmp = dest.with_name(dest.name + ".packing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for d in runs:
        out = tmp / d.name
        shutil.copytree(d, out, ignore=lambda _, names: [n for n in names if n in SKIPPED or n.endswith(".tmp")])
        carried = json.loads((d / CARRIED).read_text()) if (d / CARRIED).exists() else {
            "minutes": minutes(d), "weights_dropped": False}
        if d.name in drop and (out / POLICY).exists():
            (out / POLICY).unlink()
            carried["weights_dropped"] = True
        (out / CARRIED).write_text(json.dumps(carried, indent=1) + "\n")
    manifest = {"root": str(root.resolve()), "code_version": code_version(), "runs": len(runs),
                "weights_kept": sorted(d.name for d in runs if d.name not in drop and (d / POLICY).exists()),
                "unfinished_left_out": sorted(d.name for d in root.iterdir() if d.is_dir() and d not in runs)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return manifest


def unpack(src: str | Path, root: str | Path | None = None) -> list[Path]:
    """Copy a pack's runs back under the root they were made in; returns the runs copied (a finished run
    already there is kept as it is)."""
    src = Path(src)
    if not (src / MANIFEST).exists():
        raise ValueError(f"{str(src)!r}: not a pack (no {MANIFEST}); make one with `python -m experiments.carry pack`")
    manifest = json.loads((src / MANIFEST).read_text())
    want = Path(manifest["root"])
    if root is not None and Path(root).resolve() != want:
        raise ValueError(f"--root {str(root)!r}: these runs name their inits under {str(want)!r}; unpack there")
    if manifest["code_version"] != code_version():
        print(f"note: {src} was made by code {manifest['code_version']}, this is {code_version()}: "
              "its runs serve only studies of that code", file=sys.stderr)
    want.mkdir(parents=True, exist_ok=True)
    copied = []
    for d in finished_runs(src):
        out = want / d.name
        if holds_finished(out):
            continue
        shutil.rmtree(out, ignore_errors=True)  # an interrupted run of the same config: the pack's is finished
        shutil.copytree(d, out)
        copied.append(out)
    return copied


def main(argv=None) -> int:
    from hlsm.cli import Parser

    p = Parser(prog="python -m experiments.carry", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="copy a run cache's finished runs into a pack (replacing it)")
    a.add_argument("root", help="the run cache (a study's --runs)")
    a.add_argument("dest", help="the pack's directory, e.g. carried/<study>")
    a.add_argument("--weights-for", nargs="+", default=[], metavar="CSV",
                   help="keep only the weights of the runs these tables name in their 'run' column (default: "
                        "every run's but the spent ones')")
    b = sub.add_parser("unpack", help="copy a pack's runs back under the root they were made in")
    b.add_argument("src", help="a pack's directory")
    b.add_argument("--root", default=None, help="where to unpack (default and only choice: the pack's own root)")
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            m = pack(args.root, args.dest, args.weights_for)
            print(f"packed {m['runs']} runs of {m['root']} into {args.dest}: weights kept for "
                  f"{len(m['weights_kept'])}, {len(m['unfinished_left_out'])} unfinished left out")
        else:
            copied = unpack(args.src, args.root)
            print(f"unpacked {len(copied)} runs into {json.loads((Path(args.src) / MANIFEST).read_text())['root']}")
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
