"""Experiment framework: run cache keyed by config hash, intervals, and the protocol study on smoke."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from experiments import protocol
from experiments.report import mean_ci, read_csv
from experiments.runs import config_key, is_finished, run_dir, sft_run
from hlsm.sft import SFTConfig
from tests.test_sft import tiny_cfg

torch.set_num_threads(1)


def test_mean_ci_is_the_student_t_interval():
    xs = [0.1, 0.4, 0.35, 0.2]
    m, h, n = mean_ci(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 4, scale=stats.sem(xs))
    assert n == 4 and m == pytest.approx(0.2625) and h == pytest.approx((hi - lo) / 2)
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([])[2] == 0
    assert mean_ci([0.3, float("nan"), 0.5])[2] == 2  # missing values are dropped, not counted as 0


def test_config_key_changes_with_any_field():
    a, b = SFTConfig(), SFTConfig(eval_n=129)
    assert config_key("sft", a.to_dict()) == config_key("sft", SFTConfig().to_dict())
    assert config_key("sft", a.to_dict()) != config_key("sft", b.to_dict())
    assert config_key("sft", a.to_dict()) != config_key("grpo", a.to_dict())


def test_cached_run_is_reused_and_a_changed_config_is_not(tmp_path):
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = sft_run(cfg, tmp_path)
    assert d == run_dir("sft", cfg, tmp_path) and is_finished(d, cfg)
    stamp = (d / "policy.pt").stat().st_mtime_ns
    assert sft_run(cfg, tmp_path) == d and (d / "policy.pt").stat().st_mtime_ns == stamp  # not retrained
    changed = tiny_cfg(split=cfg.split, lr=2e-3)
    d2 = sft_run(changed, tmp_path)
    assert d2 != d and is_finished(d2, changed) and not is_finished(d, changed)


def test_an_interrupted_run_resumes(tmp_path):
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = sft_run(cfg, tmp_path)
    (d / "policy.pt").unlink()  # as if killed after the last checkpoint
    before = len(read_csv(d / "eval.csv"))
    assert sft_run(cfg, tmp_path) == d and is_finished(d, cfg) and len(read_csv(d / "eval.csv")) == before


def test_protocol_smoke_writes_paired_rows_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    rc = protocol.main(["--preset", "smoke", "--seeds", "0", "--splits", "0", "--conditions", "grpo",
                        "--runs", str(tmp_path / "runs"), "--out", str(out), "--workers", "1"])
    assert rc == 0
    rows = read_csv(out / "protocol.csv")
    assert {r["condition"] for r in rows} == {"sft", "grpo", "control"}  # a claim brings its controls
    assert {r["support"] for r in rows} == set(protocol.SUPPORTS)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert all(r["zero_std_frac"] != "" for r in rows if r["condition"] == "grpo")
    summary = read_csv(out / "protocol_summary.csv")
    ctrl = [r for r in summary if r["condition"] == "control"]
    assert all(float(r["vs_control_mean"]) == 0.0 for r in ctrl)
    for name in ("protocol.png", "protocol.pdf", "protocol.json"):
        assert (out / name).stat().st_size > 0
    assert "wall" in capsys.readouterr().out


def test_protocol_rejects_unknown_conditions():
    with pytest.raises(ValueError, match="grpo_nope"):
        protocol.StudyConfig(conditions=("grpo_nope",)).validate()
