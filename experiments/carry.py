"""Carry a run cache to another machine through git: a study longer than a session continues there.

    python -m experiments.carry pack /work/runs_cmp2 carried/compound_chunked   # copy what the study needs
    python -m experiments.carry unpack carried/compound_chunked                  # back under its root

A machine's ``runs/`` does not outlive its session, and a study of several hours on 2 cores (the
compound regime's plateau chains, issue 31) needs more than one. ``pack`` copies every finished run of
a cache, less what no later step reads: the resumable ``checkpoint.pt`` of a finished run (its
``policy.pt`` is the finished state), lock and temporary files, and the weights of a *spent* run: an
SFT run that was continued by an SFT run that was continued in turn, and that no GRPO run and no
unfinished run starts from (a plateau chain's runs but its last two, and once an arm from its tip has
started, but its tip). A chain's tip, a GRPO run's base and every leaf keep theirs. With
``--weights-for <table.csv>`` only the runs a finished study's table names keep theirs (a rate grid's runs at the
rates not chosen do not). Every packed run gets a ``carried.json``: its wall minutes (file times do not
survive git) and whether its weights were dropped. Such a run still counts as finished
(``runs.is_finished``), and its metrics and post-hoc caches are read as before; a new evaluation of it
fails, naming it (the caches of ``runs.cached_json`` are keyed by the experiments' code too: a changed
figure recomputes, which a run without weights cannot).

Configs name their ``init`` by path, so the runs go back under the root they were made in, which
``carry.json`` records: ``unpack`` restores them there, each whole or not at all, never over a
finished run or one a process is training. Runs made by other code are unpacked with a note: that
code's studies re-use them, this code's do not.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import sys
from pathlib import Path

from experiments.runs import CARRIED, LOCK, code_version, minutes, weights_dropped
from hlsm.checkpoint import CHECKPOINT, CONFIG, POLICY, SNAPSHOTS, read_config

MANIFEST = "carry.json"  # in a pack: the root its runs were made under, their code versions, whose weights stayed
SKIPPED = (CHECKPOINT, LOCK)  # never packed: a finished run's resumable state, its lock
PACKING, UNPACKING = ".packing", ".unpacking"  # suffixes of a pack / a run being written (renamed when whole)


def holds_finished(d: Path) -> bool:
    """``d`` holds a finished run: its config and its weights, or a record that they were left behind."""
    return d.is_dir() and (d / CONFIG).exists() and ((d / POLICY).exists() or weights_dropped(d))


def run_dirs(root: Path) -> list[Path]:
    """The run directories under ``root``, finished or not (never a pack or a run still being copied)."""
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and not d.name.endswith((PACKING, UNPACKING)))


def finished_runs(root: Path) -> list[Path]:
    """The run directories under ``root`` that hold a finished run."""
    return [d for d in run_dirs(root) if holds_finished(d)]


def spent(dirs: list[Path]) -> set[str]:
    """Names of the runs among ``dirs`` (a cache's run directories) whose weights no later step reads: a
    finished SFT run started from them and was itself started from, and no GRPO run, finished or not,
    and no unfinished run starts from them. In a plateau chain: all but its last two runs, and all but
    its tip once an arm from the tip has started.

    A run continued only by leaves keeps its weights: a chain's tip is where the study's arms start,
    and an arm still to come (queued, training, failed) must find it."""
    inits = {}  # run directory name -> (name, finished) of each run that starts from it
    for d in dirs:
        if (d / CONFIG).exists() and read_config(d).get("init"):
            inits.setdefault(Path(read_config(d)["init"]).name, []).append((d.name, holds_finished(d)))
    kind = lambda name: name.split("-")[0]
    return {name for name, children in inits.items()
            if all(done and kind(c) == "sft" for c, done in children) and any(c in inits for c, _ in children)}


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
    weights (``policy.pt``, snapshots) of the ``spent`` runs, or, given ``weights_for`` (study tables), of
    every run they do not name (once a study's table is written, only its rows' runs are read again);
    returns the manifest written as ``dest/carry.json``."""
    root, dest = Path(root).absolute(), Path(dest).absolute()
    if not root.is_dir():
        raise ValueError(f"{str(root)!r}: not a directory (the run cache to pack)")
    if dest == root or root in dest.parents or dest in root.parents:
        raise ValueError(f"{str(dest)!r}: inside the run cache {str(root)!r} or holding it; pack elsewhere")
    if dest.exists() and not (dest / MANIFEST).exists():  # e.g. carried/ for carried/<study>: never wipe it
        raise ValueError(f"{str(dest)!r}: exists and is not a pack; name a new folder or an earlier pack")
    dirs = run_dirs(root)  # one listing: a run that finishes meanwhile is not half counted
    runs = [d for d in dirs if holds_finished(d)]
    drop = {d.name for d in runs} - named_runs(weights_for) if weights_for else spent(dirs)
    tmp = dest.with_name(dest.name + PACKING)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for d in runs:
            gone = d.name in drop
            left = (*SKIPPED, POLICY, SNAPSHOTS) if gone else SKIPPED
            shutil.copytree(d, tmp / d.name, ignore=lambda _, names, left=left: [
                n for n in names if n in left or n.endswith(".tmp")])
            carried = {"minutes": minutes(d), "weights_dropped": gone or weights_dropped(d)}
            (tmp / d.name / CARRIED).write_text(json.dumps(carried, indent=1) + "\n")
        kept = sorted(d.name for d in runs if (tmp / d.name / POLICY).exists())
        manifest = {"root": str(root), "code_versions": sorted({d.name.rsplit("-", 1)[-1] for d in runs}),
                    "runs": len(runs), "weights_kept": kept,
                    "unfinished_left_out": sorted(d.name for d in dirs if d not in runs)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never a half pack beside the repository's files
        raise
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return manifest


def unpack(src: str | Path) -> tuple[Path, list[Path]]:
    """Copy a pack's runs back under the root they were made in; returns (the root, the runs copied). A
    finished run already there is kept as it is, and a run some process is training is left alone."""
    src = Path(src)
    if not (src / MANIFEST).exists():
        raise ValueError(f"{str(src)!r}: not a pack (no {MANIFEST}); make one with `python -m experiments.carry pack`")
    manifest = json.loads((src / MANIFEST).read_text())
    root = Path(manifest["root"])  # configs name their inits under it: the runs can live nowhere else
    if manifest["code_versions"] != [code_version()]:
        print(f"note: {src} holds runs of code {', '.join(manifest['code_versions'])}; this is {code_version()}: "
              "a run serves only studies of the code that made it", file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    for half in root.glob(f"*{UNPACKING}"):  # left by an unpack that was killed
        shutil.rmtree(half)
    copied = []
    for d in finished_runs(src):
        out = root / d.name
        if holds_finished(out) or training(out):
            continue
        tmp = root / (d.name + UNPACKING)  # whole or not at all: a run with half its files is never "finished"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(d, tmp)
        shutil.rmtree(out, ignore_errors=True)  # an interrupted run of the same config: the pack's is finished
        tmp.rename(out)
        copied.append(out)
    return root, copied


def training(d: Path) -> bool:
    """Some process holds ``d``'s lock: it is training that run now."""
    if not (d / LOCK).exists():
        return False
    with open(d / LOCK) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


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
    args = p.parse_args(argv)
    try:
        if args.command == "pack":
            m = pack(args.root, args.dest, args.weights_for)
            kept, left = len(m["weights_kept"]), len(m["unfinished_left_out"])
            print(f"packed {m['runs']} runs of {m['root']} into {args.dest}: weights kept for {kept}, "
                  f"{left} unfinished left out")
        else:
            root, copied = unpack(args.src)
            print(f"unpacked {len(copied)} runs into {root}")
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
