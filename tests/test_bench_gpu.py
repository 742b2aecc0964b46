"""bench/gpu.py, the one prepared GPU check: its CPU run end to end (what CI proves of it), a failing
or hanging check reported while the others still run, and bad input as one line with exit status 2."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ["tests", "sft_bench", "grpo_bench", "paper_sft"]


def load_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about 35 s on 2 busy cores: four subprocesses, TRL's import among them
def test_the_quick_cpu_run_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--quick"], cwd=ROOT,
                       env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("check       status"):].splitlines()
    assert [line.split()[:2] for line in table[1:5]] == [[name, "passed"] for name in CHECKS]
    assert "4 of 4 checks passed or skipped, 0 failed" in r.stdout

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {row["check"]: row for row in report["rows"]}
    assert list(rows) == CHECKS and report["machine"]["device"] == "cpu" and report["machine"]["quick"]
    tests, sft, grpo, paper = (rows[name]["numbers"] for name in CHECKS)
    # on CPU the comparisons run (bf16 forced on CPU, CPU against CPU); the cuda tests skip, saying why
    assert tests["passed"] >= 9 and tests["failed"] == 0 and tests["skipped"] >= 9
    assert "needs a CUDA GPU" in rows["tests"]["summary"]
    assert sft["ours_median"] > 0 and sft["plain_median"] > 0 and "mfu_ours" not in sft  # no peak on CPU
    assert grpo["ours"]["step_s"] > 0 and grpo["trl"]["step_s"] > 0 and grpo["speedup"]["step_s"] > 0
    assert paper["updates"] == 20 and paper["loss_last"] < paper["loss_first"]
    assert set(paper["accuracy"]) == {"seen", "unseen", "eval_atoms"}
    with open(tmp_path / "gpu_check.csv") as f:
        assert [row["check"] for row in csv.DictReader(f)] == CHECKS
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("| passed |") == 4
    for name in CHECKS:
        assert (tmp_path / f"{name}.log").stat().st_size > 0
    assert len(list(tmp_path.iterdir())) <= 8  # a lent machine returns at most 8 files from $OUT


def test_a_failing_or_hanging_check_is_reported_and_the_rest_still_run(tmp_path, capsys):
    gpu = load_gpu()
    py = sys.executable
    checks = [gpu.Check("fails", [py, "-c", "print('boom'); raise SystemExit(3)"], 60),
              gpu.Check("hangs", [py, "-c", "import time; print('started', flush=True); time.sleep(60)"], 1),
              gpu.Check("passes", [py, "-c", "print('fine')"], 60)]
    rows = gpu.run_checks(checks, budget=120, logs=tmp_path)
    assert [(r["check"], r["status"]) for r in rows] == [("fails", "failed"), ("hangs", "failed"), ("passes", "passed")]
    assert rows[0]["why"] == "exit status 3: boom"
    assert rows[1]["why"].startswith("timed out after 1 s") and rows[1]["seconds"] < 30
    assert (tmp_path / "hangs.log").read_text() == "started\n"
    # past the budget a check is skipped, saying why, not started
    late = gpu.run_checks([gpu.Check("late", [py, "-c", "pass"], 60)], budget=gpu.MIN_START_S / 2, logs=tmp_path)
    assert late[0]["status"] == "skipped" and "budget" in late[0]["why"] and not (tmp_path / "late.log").exists()

    # main: the table and the files carry the failure, and the exit status is 1
    gpu.make_checks = lambda *a: checks[:1] + checks[2:]
    assert gpu.main(["--device", "cpu", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "fails       failed" in out and "why: exit status 3: boom" in out and "1 failed" in out
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [(r["check"], r["status"]) for r in report["rows"]] == [("fails", "failed"), ("passes", "passed")]


@pytest.mark.parametrize("argv, named", [
    (["--device", "tpu"], "'tpu'"),
    (["--device", "cpu", "--budget", "-5"], "'-5'"),
    (["--device", "cpu", "--threads", "two"], "'two'"),
])
def test_bad_input_is_one_line_naming_it_and_exit_status_2(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        load_gpu().main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and named in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: --device cuda is valid input")
def test_device_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        load_gpu().main(["--device", "cuda"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "CUDA is not available" in err and "--device cpu" in err
