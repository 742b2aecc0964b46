"""Experiment framework: run cache keyed by config hash, intervals, and the protocol study on smoke."""

from __future__ import annotations

import json
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


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = run_dir("sft", cfg, tmp_path)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")  # a run directory with no checkpoint yet
    assert sft_run(cfg, tmp_path) == d and is_finished(d, cfg)


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


@pytest.fixture(scope="module")
def smoke_figures(tmp_path_factory):
    """fig1 then fig4 on the smoke preset, sharing one run cache (fig4 re-uses fig1's runs)."""
    from experiments import fig1, fig4

    root = tmp_path_factory.mktemp("figs")
    flags = ["--preset", "smoke", "--seeds", "0", "--splits", "0", "--runs", str(root / "runs"),
             "--out", str(root / "out"), "--workers", "1"]
    assert fig1.main(flags) == 0
    n_runs = len(list((root / "runs").iterdir()))
    assert fig4.main(flags) == 0
    return root, n_runs


def test_fig1_writes_files_columns_and_provenance(smoke_figures):
    root, _ = smoke_figures
    out = root / "out"
    for name in ("fig1.png", "fig1.pdf", "fig1.csv", "fig1.json", "table1.csv", "table1.md"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "fig1.csv")
    assert set(rows[0]) >= {"panel", "condition", "set", "depth", "mean", "ci95", "n"}
    assert {r["panel"] for r in rows} == {"gain_at_Ltrain", "accuracy_by_depth", "gain_by_depth"}
    table = read_csv(out / "table1.csv")
    assert [r["paper_accuracy_pct"] for r in table[:3]] == ["4.8", "14.8", "42.6"]  # the paper's, beside ours
    meta = json.loads((out / "fig1.json").read_text())
    assert meta["seeds"] == [0] and meta["provenance"]["git"] and meta["wall_s"] > 0
    assert meta["configs_of_first_unit"]["grpo"][1]["init"] == ""  # filled per run, not in the template
    assert all((root / "runs" / r).is_dir() for r in meta["runs"])


def test_fig4_reuses_fig1_runs_and_writes_both_panels(smoke_figures):
    root, n_after_fig1 = smoke_figures
    runs = {p.name for p in (root / "runs").iterdir()}
    # fig4 adds grpo_inside and the bottom panel's bases (+ their RL and controls): 1 + 2 * 3 runs
    assert len(runs) == n_after_fig1 + 7
    rows = read_csv(root / "out" / "fig4.csv")
    assert {r["panel"] for r in rows} == {"top", "bottom"}
    assert {r["condition"] for r in rows if r["panel"] == "top"} == {"sft", "grpo_inside", "grpo", "control"}
    assert (root / "out" / "fig4.png").stat().st_size > 0


def test_a_changed_config_is_not_served_from_the_cache(smoke_figures, capsys):
    from experiments import fig1

    root, _ = smoke_figures
    before = {p.name for p in (root / "runs").iterdir()}
    old = protocol.PRESETS["smoke"]
    try:
        protocol.PRESETS["smoke"] = dict(old, grpo=dict(old["grpo"], lr=1e-3))
        assert fig1.main(["--preset", "smoke", "--seeds", "0", "--splits", "0", "--runs", str(root / "runs"),
                          "--out", str(root / "out2"), "--workers", "1"]) == 0
    finally:
        protocol.PRESETS["smoke"] = old
    new = {p.name for p in (root / "runs").iterdir()} - before
    assert len(new) == 3  # grpo, grpo_atoms and the control are retrained; the SFT base is re-used
    meta = json.loads((root / "out2" / "fig1.json").read_text())
    assert meta["configs_of_first_unit"]["grpo"][1]["lr"] == 1e-3
