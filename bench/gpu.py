"""One prepared GPU check: the ``cuda`` tests, both training benches and a few hundred ``paper``-preset
SFT updates, one summary table. What a lent GPU runs, in one call.

    python bench/gpu.py --device cuda           # one GPU: 450 s at most, the budget below
    python bench/gpu.py --device cpu --quick    # tiny sizes, end to end on CPU (CI runs this)

Each check is a subprocess with its own timeout. The budget on one H100, in seconds, and beside it
what the check should take there (a guess from CPU timings and sizes: no GPU has run it yet):

    tests       python -m pytest tests/test_cuda.py: bf16 vs fp32 SFT and GRPO steps,       120   ~40
                KV-cache decoding vs a full forward, a resumed CUDA run, greedy eval CUDA vs CPU
    sft_bench   bench/train_sft.py --preset paper: tokens/s of hlsm.sft and of a plain        90   ~45
                nanoGPT loop, MFU against the card's bf16 peak
    grpo_bench  bench/train_grpo.py: one GRPO step, hlsm.grpo vs TRL's GRPOTrainer, same run 150  ~100
                (its starting policy trains on CPU first, as that bench does)
    paper_sft   python -m hlsm.sft --preset paper, 300 updates: the loss falls, tokens/s,     90   ~40
                greedy accuracy at the end

450 s in all (``--budget``): a check gets at most what is left of it, and one that would start with
less than 20 s left is skipped, so the whole ends inside 8 minutes. A failing check (non-zero exit,
timeout, a number out of range) is reported in its row and the others still run; the exit status is
then 1. Bad input: one line naming the value and what is allowed, exit status 2.

Prints one table: check, status (passed / failed / skipped), seconds, numbers or why. With $OUT set
(or ``--out DIR``) it also writes there gpu_check.json (the rows, their numbers and the machine),
gpu_check.csv, gpu_check.md and each check's output as <check>.log. It installs nothing: run it where
the README's install line has run (``[integrations]`` brings TRL; without it grpo_bench fails, saying
so, after timing hlsm.grpo).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's hlsm, also in the subprocesses (PYTHONPATH below)

from hlsm.cli import Parser  # noqa: E402 -- one-line errors, exit status 2

BUDGET_S = 450.0  # default --budget: the four timeouts below add up to it; the bound is 8 minutes
MIN_START_S = 20.0  # a check that would start with less of the budget left is skipped, not started
TIMEOUT_S = {"tests": 120, "sft_bench": 90, "grpo_bench": 150, "paper_sft": 90}  # each check's share, one H100
QUICK_TIMEOUT_S = 240  # --quick, each check: seconds on a CPU; generous, since CI's CPUs may be shared
# dense bf16 TFLOP/s by a part of the card's name (vendor datasheets: half the "with sparsity" figure), the
# MFU denominator; the first match wins, so the longer names come first. Other cards: --peak-tflops, else
# train_sft.py's default (989, the H100 SXM).
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


@dataclass
class Check:
    name: str
    cmd: list[str]
    timeout: float  # seconds
    read: object = None  # read(rc, log_text) -> (status, why, numbers, summary); None: the exit status alone


def run_checks(checks: list[Check], budget: float, logs: Path) -> list[dict]:
    """Run ``checks`` in order, each to its timeout or the budget's end; one row each."""
    deadline, rows = time.monotonic() + budget, []
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}
    for c in checks:
        left = deadline - time.monotonic()
        if left < MIN_START_S:
            rows.append(row(c.name, "skipped", 0.0, f"only {max(left, 0):.0f} s of the budget left", {}, ""))
            continue
        limit = min(c.timeout, left)
        log = logs / f"{c.name}.log"
        print(f"[{c.name}] {' '.join(c.cmd)}  (timeout {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        with open(log, "w") as f:
            # its own process group: a timeout ends the check and whatever it started
            proc = subprocess.Popen(c.cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        seconds, text = time.monotonic() - t0, log.read_text(errors="replace")
        try:
            status, why, numbers, summary = (c.read or read_exit)(rc, text)
        except Exception as e:  # noqa: BLE001 -- a reader's bug is this check's failure, not the script's
            status, why, numbers, summary = "failed", f"reading its results: {type(e).__name__}: {e}", {}, ""
        if rc is None:
            status, why = "failed", f"timed out after {limit:.0f} s" + (f"; {why}" if why else "")
        rows.append(row(c.name, status, seconds, why, numbers, summary))
        print(f"[{c.name}] {status} in {seconds:.1f} s{': ' + why if why else ''}", flush=True)
    return rows


def row(name, status, seconds, why, numbers, summary) -> dict:
    return {"check": name, "status": status, "seconds": round(seconds, 1), "why": why, "summary": summary,
            "numbers": numbers}


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def read_exit(rc, text):
    if rc == 0:
        return "passed", "", {}, ""
    return "failed", f"exit status {rc}: {last_line(text)}" if rc is not None else "", {}, ""


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# --- what each check reads from its run -------------------------------------------------------------


def read_tests(junit: Path, device: str):
    def read(rc, text):
        if not junit.exists():
            return "failed", f"no test report: {last_line(text)}", {}, ""
        cases = ET.parse(junit).getroot().iter("testcase")
        outcome = {}
        for case in cases:
            kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            msg = next((child.get("message", "") for child in case if child.tag == kind), "")
            outcome[case.get("name")] = (kind, msg)
        count = {k: sum(v[0] == k for v in outcome.values()) for k in ("passed", "failure", "error", "skipped")}
        numbers = {"passed": count["passed"], "failed": count["failure"] + count["error"], "skipped": count["skipped"]}
        reasons = sorted({msg for kind, msg in outcome.values() if kind == "skipped"})
        summary = f"{numbers['passed']} passed, {numbers['failed']} failed, {numbers['skipped']} skipped"
        if reasons:
            summary += f" ({'; '.join(r.removeprefix('Skipped: ') for r in reasons)})"
        bad = [f"{name}: {msg.splitlines()[0][:160] if msg else kind}" for name, (kind, msg) in outcome.items()
               if kind in ("failure", "error")]
        if bad:
            return "failed", f"{len(bad)} failed: " + " | ".join(bad), numbers, summary
        if rc != 0:
            return "failed", f"pytest exit status {rc}: {last_line(text)}", numbers, summary
        if device == "cuda" and numbers["skipped"]:
            return "failed", f"{numbers['skipped']} skipped on a CUDA device", numbers, summary
        return "passed", "", numbers, summary
    return read


def read_sft_bench(path: Path):
    def read(rc, text):
        n = read_json(path)
        if rc != 0 or not n:
            return "failed", f"exit status {rc}: {last_line(text)}" if rc is not None else "", n, ""
        summary = (f"{n['preset']}: hlsm.sft {n['ours_median']:,.0f} tok/s median (best {n['ours_best']:,.0f}), "
                   f"plain nanoGPT loop {n['plain_median']:,.0f}: {n['ratio_median']:.2f}x")
        if "mfu_ours" in n:
            summary += (f"; MFU {n['mfu_ours']:.1%} (plain {n['mfu_plain']:.1%}) of {n['peak_tflops']:g} "
                        f"TFLOP/s bf16")
        if not all(math.isfinite(n[k]) and n[k] > 0 for k in ("ours_median", "plain_median")):
            return "failed", "a rate is not a positive number", n, summary
        return "passed", "", n, summary
    return read


def read_grpo_bench(path: Path):
    def read(rc, text):
        n = read_json(path)
        parts = []
        for side, r in (("hlsm.grpo", n.get("ours")), (f"TRL {n.get('trl_version', '')}".strip(), n.get("trl"))):
            if r:
                parts.append(f"{side} step {r['step_s']:.3f} s (rollout {r['rollout_s']:.3f} + update "
                             f"{r['update_s']:.3f}), {r['rollout_tok_s']:,.0f} rollout tok/s")
        if "speedup" in n:
            parts.append(f"TRL / ours {n['speedup']['step_s']:.1f}x")
        summary = "; ".join(parts)
        if rc != 0 or "speedup" not in n:
            return "failed", f"exit status {rc}: {last_line(text)}" if rc is not None else "", n, summary
        return "passed", "", n, summary
    return read


def read_paper_sft(run: Path):
    def read(rc, text):
        from hlsm.checkpoint import read_metrics

        rows = read_metrics(run) if (run / "metrics.jsonl").exists() else []
        losses = [m["loss"] for m in rows if "loss" in m]
        rates = [m["tokens_per_s"] for m in rows if "tokens_per_s" in m]
        acc = {k.removeprefix("eval/"): v for m in rows for k, v in m.items() if k.startswith("eval/")}
        n = {"updates": max((m["step"] for m in rows if "loss" in m), default=0),
             "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
             "tokens_per_s_median": statistics.median(rates) if rates else None, "accuracy": acc}
        summary = ""
        if losses:
            summary = (f"{n['updates']} updates: loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                       f"{n['tokens_per_s_median']:,.0f} tok/s median")
        if acc:
            summary += "; greedy accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
        if rc != 0:
            return "failed", f"exit status {rc}: {last_line(text)}" if rc is not None else "", n, summary
        if not losses or not all(math.isfinite(x) for x in losses):
            return "failed", "no finite training loss logged", n, summary
        if not losses[-1] < losses[0]:
            return "failed", f"the loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})", n, summary
        return "passed", "", n, summary
    return read


# --- the checks -----------------------------------------------------------------------------------


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def make_checks(device: str, quick: bool, threads: int, peak: float | None, work: Path) -> list[Check]:
    """The four checks: the full sizes on a GPU, tiny ones with ``quick``."""
    py, t = sys.executable, str(threads)
    timeout = (lambda name: QUICK_TIMEOUT_S) if quick else TIMEOUT_S.get
    junit = work / "junit.xml"
    tests = [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests/test_cuda.py"]

    sft = [py, "bench/train_sft.py", "--device", device, "--threads", t, "--json", str(work / "sft_bench.json")]
    sft += (["--preset", "smoke", "--steps", "6", "--warmup", "2", "--repeats", "1"] if quick
            else ["--preset", "paper", "--steps", "60", "--warmup", "10", "--repeats", "3"])
    if peak:
        sft += ["--peak-tflops", f"{peak:g}"]

    grpo = [py, "bench/train_grpo.py", "--device", device, "--threads", t, "--json", str(work / "grpo_bench.json"),
            "--out", str(work / "trl")]
    grpo += (["--preset", "smoke", "--sft-steps", "20", "--prompts", "4", "--group", "2", "--max-new", "8",
              "--steps", "1", "--warmup", "1"] if quick else ["--steps", "5", "--warmup", "2"])

    run = work / "paper_sft"
    paper = [py, "-m", "hlsm.sft", "--preset", "paper", "--device", device, "--out", str(run), "--no-progress",
             "--threads", t, "--eval-every", "0"]
    # --quick: the paper preset's config and RoPE at a toy width; else its model, 300 updates, warmup cut to 30
    paper += (["--model", '{"n_layer": 1, "n_head": 2, "n_embd": 32}', "--batch-size", "8", "--steps", "20",
               "--warmup-steps", "2", "--eval-n", "4", "--ckpt-every", "10", "--log-every", "5"] if quick
              else ["--steps", "300", "--warmup-steps", "30", "--eval-n", "256", "--ckpt-every", "100",
                    "--log-every", "10"])
    return [Check("tests", tests, timeout("tests"), read_tests(junit, device)),
            Check("sft_bench", sft, timeout("sft_bench"), read_sft_bench(work / "sft_bench.json")),
            Check("grpo_bench", grpo, timeout("grpo_bench"), read_grpo_bench(work / "grpo_bench.json")),
            Check("paper_sft", paper, timeout("paper_sft"), read_paper_sft(run))]


# --- the report -----------------------------------------------------------------------------------


def machine(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_cores": os.cpu_count(), "host": platform.node()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def table(rows: list[dict]) -> str:
    lines = [f"{'check':<11} {'status':<8} {'seconds':>7}  numbers / why"]
    for r in rows:
        text = "; ".join(x for x in (f"why: {r['why']}" if r["why"] else "", r["summary"]) if x)
        lines.append(f"{r['check']:<11} {r['status']:<8} {r['seconds']:>7.1f}  {text}")
    return "\n".join(lines)


def write_outputs(out: Path, rows: list[dict], info: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    with open(out / "gpu_check.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["check", "status", "seconds", "why", "summary", "numbers"])
        for r in rows:
            w.writerow([r["check"], r["status"], r["seconds"], r["why"], r["summary"], json.dumps(r["numbers"])])
    cell = lambda s: s.replace("|", "/")
    md = [f"GPU check on {info.get('gpu', info['device'])}, torch {info['torch']}, git {info.get('git', '?')}", "",
          "| check | status | seconds | numbers | why |", "|---|---|---|---|---|"]
    md += [f"| {r['check']} | {r['status']} | {r['seconds']:.1f} | {cell(r['summary'])} | {cell(r['why'])} |"
           for r in rows]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")


def main(argv=None) -> int:
    def positive(kind):
        def parse(text):
            try:
                v = kind(text)
            except ValueError:
                v = None
            if v is None or not v > 0 or not math.isfinite(v):
                what = "an integer" if kind is int else "a number"
                raise argparse.ArgumentTypeError(f"must be {what} > 0, got {text!r}")
            return v
        parse.__name__ = kind.__name__
        return parse

    p = Parser(prog="bench/gpu.py", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where to run (default cuda)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the script end to end (CI, on CPU)")
    p.add_argument("--out", default=os.environ.get("OUT", ""),
                   help="folder for gpu_check.json / .csv / .md and the logs (default: $OUT, if set)")
    p.add_argument("--budget", type=positive(float), default=BUDGET_S, help=f"seconds in all (default {BUDGET_S:g})")
    p.add_argument("--threads", type=positive(int), default=None,
                   help="CPU threads of each check (default: 1 with --quick, else min(8, cores))")
    p.add_argument("--peak-tflops", type=positive(float), default=None,
                   help="the card's dense bf16 peak for MFU (default: by its name; unknown: train_sft.py's 989)")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error(f"--device cuda: CUDA is not available here (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda or 'none'}); allowed here: --device cpu")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        p.error(f"--out {args.out}: is a file; give a folder")
    threads = args.threads or (1 if args.quick else min(8, os.cpu_count() or 1))
    info = machine(args.device)
    peak = args.peak_tflops or (peak_tflops(info["gpu"]) if args.device == "cuda" else None)
    info.update(quick=args.quick, budget_s=args.budget, threads=threads, peak_tflops=peak)
    print(f"GPU check: {info.get('gpu', 'cpu')}, torch {info['torch']} (CUDA {info['cuda']}), {info['cpu_cores']} "
          f"cores, {threads} threads per check, budget {args.budget:g} s{', quick' if args.quick else ''}", flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        rows = run_checks(make_checks(args.device, args.quick, threads, peak, work), args.budget, out or work)
    info["seconds"] = round(time.monotonic() - t0, 1)
    failed = [r["check"] for r in rows if r["status"] == "failed"]
    print("\n" + table(rows))
    print(f"{len(rows) - len(failed)} of {len(rows)} checks passed or skipped, {len(failed)} failed, "
          f"{info['seconds']:.0f} s" + (f"; written to {out}" if out else ""))
    if out is not None:
        write_outputs(out, rows, info)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
