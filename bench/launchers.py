"""Ray's overhead: ``python -m experiments.fig1`` under ``--launcher local`` and ``--launcher ray``.

    python bench/launchers.py [--preset tiny] [--workers 2] [--repeats 2] [--json out.json]

Each repeat runs the figure once per launcher, in alternating order, each on a fresh run cache (so
every run trains), as its own process: the wall time of the whole command, imports and the start of
the Ray runtime included. Prints both times, their ratio, the extra seconds per trained run, and
whether the result files (``fig1.csv``, ``table1.md``) came out byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHERS = ("local", "ray")
COMPARED = ("fig1.csv", "table1.md")


def fig1(work: Path, launcher: str, preset: str, workers: int) -> tuple[float, int, dict]:
    """Wall seconds, runs trained and result bytes of one ``experiments.fig1`` on a fresh cache."""
    runs, out = work / f"runs-{launcher}", work / f"out-{launcher}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.fig1", "--preset", preset, "--seeds", "0", "--splits", "0",
                    "--runs", str(runs), "--out", str(out), "--workers", str(workers), "--launcher", launcher],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t, len(list(runs.iterdir())), {f: (out / f).read_bytes() for f in COMPARED}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", choices=("tiny", "smoke"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()
    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"fig1 --preset {a.preset} --workers {a.workers}", flush=True)
    rows, same = [], True
    for r in range(a.repeats):
        order = LAUNCHERS if r % 2 == 0 else LAUNCHERS[::-1]
        with tempfile.TemporaryDirectory() as tmp:
            got = {launcher: fig1(Path(tmp), launcher, a.preset, a.workers) for launcher in order}
        same &= got["local"][2] == got["ray"][2]
        for launcher in order:
            rows.append({"repeat": r, "launcher": launcher, "wall_s": round(got[launcher][0], 1),
                         "runs": got[launcher][1]})
            print(json.dumps(rows[-1]), flush=True)
    wall = {x: statistics.median(r["wall_s"] for r in rows if r["launcher"] == x) for x in LAUNCHERS}
    n = rows[0]["runs"]
    ratio = wall["ray"] / wall["local"]
    print(f"median wall: local {wall['local']:.1f} s, ray {wall['ray']:.1f} s (ray / local {ratio:.2f}x, "
          f"{(wall['ray'] - wall['local']) / n:+.2f} s per run over {n} runs); result files byte-identical: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "median_wall_s": wall, "identical": same}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
