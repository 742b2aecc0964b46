"""Thread defaults under load: ``probes.report`` and an evaluation, torch's default threads vs one.

    python bench/threads.py [--load 2] [--n 256] [--json out.json]

A small SFT run and a GRPO run from it (smoke preset, one thread) are made first, as
``python -m probes.report --run runs/grpo --base runs/sft`` needs. Then each command runs as its own
process, once with ``--threads 0`` (torch's default: one thread per core) and once with ``--threads
1`` (our default, ``hlsm.cli.THREADS``), first on the machine as it is, then beside ``--load``
CPU-bound processes (a pure-Python busy loop each: what another job on the machine looks like to the
scheduler). Timed: the wall time of the whole command, imports included. The evaluation is ``python
-m hlsm.grpo --resume`` of the finished GRPO run with a larger ``--eval-n``: a finished run that is
asked to evaluate differently only evaluates (``hlsm.runloop.finished_run``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SFT_STEPS, GRPO_STEPS = 300, 10  # enough to make real run directories; the timed commands do not train
BUSY = "while True: pass"


def sh(*args: str) -> float:
    """Wall seconds of ``python *args`` (output discarded; a failure stops the bench)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def make_runs(work: Path) -> tuple[Path, Path]:
    sft, grpo = work / "sft", work / "grpo"
    sh("-m", "hlsm.sft", "--out", str(sft), "--steps", str(SFT_STEPS), "--threads", "1", "--no-progress")
    sh("-m", "hlsm.grpo", "--init", str(sft), "--out", str(grpo), "--steps", str(GRPO_STEPS), "--threads", "1",
       "--no-progress")
    return sft, grpo


def commands(sft: Path, grpo: Path, work: Path, n: int, threads: int) -> dict[str, list[str]]:
    t = str(threads)
    return {
        "probes.report": ["-m", "probes.report", "--run", str(grpo), "--base", str(sft), "--n", str(n),
                          "--out", str(work / f"probes_{t}.png"), "--threads", t],
        "evaluation": ["-m", "hlsm.grpo", "--init", str(sft), "--out", str(grpo), "--resume", "--steps",
                       str(GRPO_STEPS), "--eval-n", str(n + threads + 1), "--threads", t, "--no-progress"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes beside (default: cores)")
    ap.add_argument("--n", type=int, default=256, help="items per support (default 256)")
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args(argv)
    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, python {platform.python_version()}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sft, grpo = make_runs(work)
        for load in (0, a.load):
            hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
            try:
                for threads in (0, 1):
                    for name, args in commands(sft, grpo, work, a.n, threads).items():
                        rows.append({"command": name, "load": load, "threads": threads, "wall_s": round(sh(*args), 2)})
                        print(json.dumps(rows[-1]), flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    print(f"\n{'command':16s} {'busy procs':>10s} {'threads 0 (s)':>14s} {'threads 1 (s)':>14s} {'ratio':>7s}")
    for name in ("probes.report", "evaluation"):
        for load in (0, a.load):
            t0, t1 = (next(r["wall_s"] for r in rows if (r["command"], r["load"], r["threads"]) == (name, load, t))
                      for t in (0, 1))
            print(f"{name:16s} {load:10d} {t0:14.1f} {t1:14.1f} {t0 / t1:6.1f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
