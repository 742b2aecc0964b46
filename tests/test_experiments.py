"""Experiment framework: run cache keyed by config hash, intervals, and the protocol study on smoke."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats

from experiments import protocol, replot
from experiments.report import interval_note, mean_ci, pm, read_csv, write_csv, write_json
from experiments.runs import config_key, is_finished, run_all, run_dir, sft_run
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


def test_a_table_cell_says_one_unit_in_words_not_nan():
    assert pm(0.5214, 0.0342) == "52.1 ± 3.4" and pm(0.03, 0.01, "+") == "+3.0 ± 1.0"
    assert pm(0.5214, float("nan")) == "52.1 (1 unit)" and pm(-0.02, float("nan"), "+") == "-2.0 (1 unit)"
    assert pm(float("nan"), float("nan")) == "—" and pm(None, None) == "—"
    assert interval_note(1) == "1 unit, no interval" and "95% t-intervals" in interval_note(6)


def _units(n_units: int, depth: int = 3) -> list[dict]:
    """fig1's per-unit rows for ``n_units`` made-up units (every condition, every accuracy key)."""
    from experiments import fig1

    rng = np.random.default_rng(0)
    keys = ["acc/eval_atoms", "acc/seen", "acc/unseen", f"acc/L{depth + 1}", f"acc/L{depth + 2}"]
    return [{"split": u % 2, "seed": u // 2, "condition": c, **{k: float(rng.uniform()) for k in keys}}
            for u in range(n_units) for c in fig1.CONDITIONS]


def test_table1_of_one_unit_says_so_instead_of_nan():
    from experiments import fig1

    _, md = fig1.table1(_units(1), 3)
    assert "nan" not in md and "(1 unit)" in md and "1 unit (split x seed), no interval" in md


def test_fig1_replot_draws_the_csvs_numbers_and_trains_nothing(tmp_path, monkeypatch):
    from experiments import fig1

    plotted = fig1.plotted_rows(_units(4), 3)
    write_csv(plotted, tmp_path / "fig1.csv")
    write_json({"args": {"preset": "tiny"}, "plotted": plotted}, tmp_path / "fig1.json")
    before = (tmp_path / "fig1.csv").read_bytes()
    drawn, real_plot = [], fig1.plot

    def plot(rows, depth, stem):  # the real figure, and what it was given
        drawn.append((rows, depth))
        real_plot(rows, depth, stem)

    monkeypatch.setattr(fig1, "plot", plot)
    monkeypatch.setattr(protocol, "run_study", lambda *a, **k: pytest.fail("--replot must not train"))
    assert fig1.main(["--replot", "--out", str(tmp_path)]) == 0
    (rows, depth), = drawn
    assert depth == 3 and len(rows) == len(plotted)
    for got, want in zip(rows, plotted):  # the same numbers, to the last bit (nan where there is no interval)
        assert got.keys() == want.keys()
        assert all(got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]) for k in want)
    assert (tmp_path / "fig1.png").stat().st_size > 0 and (tmp_path / "fig1.pdf").stat().st_size > 0
    assert (tmp_path / "fig1.csv").read_bytes() == before  # numbers untouched


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


def test_runs_are_keyed_by_code_and_stale_ones_are_named_not_reused(tmp_path, monkeypatch, capsys):
    import experiments.runs as runs

    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = sft_run(cfg, tmp_path)
    assert d.name.endswith(runs.code_version())
    monkeypatch.setattr(runs, "code_version", lambda *packages: "0123456789ab")  # the code changed
    d2 = sft_run(cfg, tmp_path)
    assert d2 != d and d2.name.endswith("0123456789ab") and is_finished(d2, cfg) and d.exists()
    assert f"stale run {d}" in capsys.readouterr().err


def test_code_version_follows_the_source(tmp_path, monkeypatch):
    import shutil
    import sys

    import experiments.runs as runs

    pkg = tmp_path / "hlsm"
    shutil.copytree(runs.Path(runs.__file__).parent.parent / "hlsm", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.delitem(sys.modules, "hlsm", raising=False)
    runs.code_version.cache_clear()
    try:
        v = runs.code_version()
        assert v == runs.code_version() and len(v) == 12
        runs.code_version.cache_clear()
        tool = pkg / "identify" / "parse.py"
        tool.write_text(tool.read_text() + "\n# a tool, not run code\n")
        assert runs.code_version() == v
        runs.code_version.cache_clear()
        (pkg / "grpo.py").write_text((pkg / "grpo.py").read_text() + "\n# any change to run code\n")
        assert runs.code_version() != v
    finally:
        runs.code_version.cache_clear()


def test_every_protocol_and_heldout_control_is_the_labelled_control_of_its_grpo_run():
    from experiments import heldout
    from hlsm.control import labelled_control

    cfg = protocol.StudyConfig(preset="cpu", tier="all")
    unit = protocol.unit_configs(cfg, 0, 1)
    assert set(protocol.CONTROL_OF) == {n for n, (kind, _) in unit.items() if kind == "grpo"}
    for grpo, control in protocol.CONTROL_OF.items():
        want = labelled_control(unit[grpo][1], unit[protocol.CONDITIONS[grpo][0]][1]).to_dict()
        got = unit[control][1].to_dict()
        assert {k: got[k] for k in ("train_supports", "batch_size", "steps", "lr", "seed", "warmup_steps")} == \
            {k: want[k] for k in ("train_supports", "batch_size", "steps", "lr", "seed", "warmup_steps")}, grpo
    p = heldout.PRESETS["cpu"]["grpo"]["prompts_per_step"]
    for figure in ("fig2", "fig3"):
        unit = heldout.unit_configs(figure, "cpu", 0, 1, replay=True)
        assert tuple(unit) == heldout.conditions(figure, replay=True)
        for name, (kind, c) in unit.items():
            if kind != "control":
                continue
            g = unit[name.replace("control", "grpo")][1]
            replay = round(heldout.REPLAY * p) if name.endswith("+replay") else 0
            want = {g.rl_support: float(p), **({"sft": float(replay)} if replay else {})}
            assert c.train_supports == want and c.batch_size == p + replay, name
            assert (c.steps, c.lr, c.seed, c.min_lr_ratio, c.fmt) == (g.steps, g.lr, g.seed, 1.0, unit["sft"][1].fmt)


def test_the_sft_missing_base_misses_a_quarter_of_its_splits_skills_and_only_it():
    cfg = protocol.StudyConfig(preset="cpu", conditions=("sft_missing+grpo", "sft_compounds+grpo"), tier="all")
    unit = protocol.unit_configs(cfg, 1, 0)
    missing = unit["sft_missing"][1].split["sft_missing"]
    assert len(missing) == len(protocol.PRESETS["cpu"]["split"]["skills"]) // 4 == 2
    spec = dict(protocol.PRESETS["cpu"]["split"], partition_seed=1)
    assert missing == protocol.sft_missing_split(spec)["sft_missing"]
    assert unit["sft_missing"][1].train_supports == {"sft_missing": 1.0}
    assert "sft_missing" not in unit["sft_compounds"][1].split
    assert unit["sft_missing"][1].steps == unit["sft_compounds"][1].steps  # equal budgets


def test_figures_evaluate_only_evaluation_supports():
    from experiments import fig1, heldout
    from hlsm.support import make_split

    spec = protocol.PRESETS["cpu"]["split"]
    study = make_split(dict(spec, deeper=[spec["depth"] + 1, spec["depth"] + 2]))
    assert set(protocol.SUPPORTS) <= set(study.eval)
    assert {fig1.EVAL_ATOMS, fig1.SEEN, fig1.UNSEEN, protocol.DEEPER} <= set(study.eval)
    for figure in ("fig2", "fig3"):
        assert set(heldout.SUPPORTS) <= set(make_split(heldout.split_spec(figure, 0, "cpu")).eval)


def test_an_interrupted_run_resumes(tmp_path):
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = sft_run(cfg, tmp_path)
    (d / "policy.pt").unlink()  # as if killed after the last checkpoint
    before = len(read_csv(d / "eval.csv"))
    assert sft_run(cfg, tmp_path) == d and is_finished(d, cfg) and len(read_csv(d / "eval.csv")) == before


def _train_tiny(root: str) -> str:
    return str(sft_run(tiny_cfg(split=tiny_cfg().split.to_dict(), steps=40), root, threads=1))


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    """A restarted study beside a killed one's workers, or two workers of a cluster: the run lock lets
    one train and the other wait, then re-use the finished run; the weights are those of a lone run."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from hlsm.checkpoint import load_policy, read_metrics

    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        a, b = pool.map(_train_tiny, [str(tmp_path / "shared")] * 2)
    assert a == b
    steps = [m["step"] for m in read_metrics(a) if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # one trainer wrote the log, once per step
    alone = _train_tiny(str(tmp_path / "alone"))
    for (name, x), y in zip(load_policy(a)[0].state_dict().items(), load_policy(alone)[0].state_dict().values()):
        assert torch.equal(x, y), name


PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from experiments.runs import die_with_parent
with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_die_with_a_killed_study():
    import os
    import signal
    import subprocess
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):  # the kernel signals the orphan at once; give it up to 10 s to exit
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived its killed study")


def test_two_names_for_one_config_train_one_run(tmp_path):
    # e.g. the variant base sft_nopos in a regime that already has no positions: one directory, trained once
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    a, b = run_all([("sft", cfg), ("sft", cfg)], tmp_path, workers=2, progress=False)
    assert a == b and is_finished(a, cfg) and len(list(tmp_path.iterdir())) == 1


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    cfg = tiny_cfg(split=tiny_cfg().split.to_dict())
    d = run_dir("sft", cfg, tmp_path)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")  # a run directory with no checkpoint yet
    assert sft_run(cfg, tmp_path) == d and is_finished(d, cfg)


@pytest.mark.slow
def test_protocol_smoke_writes_paired_rows_and_summary(tmp_path, capsys):
    out = tmp_path / "out"
    rc = protocol.main(["--preset", "tiny", "--seeds", "0", "--splits", "0", "--conditions", "grpo",
                        "--runs", str(tmp_path / "runs"), "--out", str(out), "--workers", "1"])
    assert rc == 0
    rows = read_csv(out / "protocol.csv")
    assert {r["condition"] for r in rows} == {"sft", "grpo", "control"}  # a claim brings its controls
    assert {r["support"] for r in rows} == set(protocol.SUPPORTS)
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert all(r["zero_std_frac"] != "" for r in rows if r["condition"] == "grpo")
    summary = read_csv(out / "protocol_summary.csv")
    acc = {(r["condition"], r["support"]): float(r["accuracy"]) for r in rows}
    for r in summary:  # a GRPO condition is read against its own control; the control against nothing
        if r["condition"] == "grpo":
            want = acc[("grpo", r["support"])] - acc[("control", r["support"])]
            assert float(r["vs_control_mean"]) == pytest.approx(want)
        else:
            assert math.isnan(float(r["vs_control_mean"]))
    for name in ("protocol.png", "protocol.pdf", "protocol.json"):
        assert (out / name).stat().st_size > 0
    assert "wall" in capsys.readouterr().out


def test_protocol_rejects_unknown_conditions():
    with pytest.raises(ValueError, match="grpo_nope"):
        protocol.StudyConfig(conditions=("grpo_nope",)).validate()


@pytest.mark.slow
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


@pytest.mark.slow
def test_fig4_reuses_fig1_runs_and_writes_both_panels(smoke_figures):
    from experiments import fig4

    root, n_after_fig1 = smoke_figures
    runs = {p.name for p in (root / "runs").iterdir()}
    # fig4 adds grpo_inside, its control, and the bottom panel's bases (+ their RL and controls): 2 + 2 * 3
    assert len(runs) == n_after_fig1 + 8
    rows = read_csv(root / "out" / "fig4.csv")
    assert {r["panel"] for r in rows} == {"top", "bottom"}
    assert {r["condition"] for r in rows if r["panel"] == "top"} == set(fig4.TOP)
    bottom = [r for r in rows if r["panel"] == "bottom" and not r.get("minus")]  # not the paired rows
    assert {r["condition"] for r in bottom} == set(fig4.bottom_conditions(fig4.BOTTOM_BASES))
    assert {r["set"] for r in bottom} == set(fig4.BOTTOM_SETS)
    assert {(r["condition"], r["minus"]) for r in rows if r.get("minus")} >= set(fig4.COVERED_VS_MISSING)
    units = read_csv(root / "out" / "fig4_units.csv")
    acc = {(r["condition"], r["support"]): float(r["accuracy"]) for r in units}
    for c in fig4.bottom_conditions(fig4.BOTTOM_BASES):  # the two halves of unseen were scored post hoc
        assert 0 <= acc[(c, "unseen_missing")] <= 1 and 0 <= acc[(c, "unseen_covered")] <= 1
    meta = json.loads((root / "out" / "fig4.json").read_text())
    tiny_skills = protocol.PRESETS["tiny"]["split"]["skills"]
    missing = meta["missing_skills_by_split"]["0"]["sft_missing"]
    assert len(missing) == 1 and set(missing) <= set(tiny_skills)  # a quarter of the tiny preset's 4
    assert (root / "out" / "fig4.png").stat().st_size > 0


@pytest.mark.slow
def test_a_changed_config_is_not_served_from_the_cache(smoke_figures, capsys):
    from experiments import fig1

    root, _ = smoke_figures
    before = {p.name for p in (root / "runs").iterdir()}
    old = protocol.PRESETS["tiny"]
    try:
        protocol.PRESETS["tiny"] = dict(old, grpo=dict(old["grpo"], lr=1e-3))
        assert fig1.main(["--preset", "tiny", "--seeds", "0", "--splits", "0", "--runs", str(root / "runs"),
                          "--out", str(root / "out2"), "--workers", "1"]) == 0
    finally:
        protocol.PRESETS["tiny"] = old
    new = {p.name for p in (root / "runs").iterdir()} - before
    assert len(new) == 4  # grpo, grpo_atoms and their two controls are retrained; the SFT base is re-used
    meta = json.loads((root / "out2" / "fig1.json").read_text())
    assert meta["configs_of_first_unit"]["grpo"][1]["lr"] == 1e-3


# --- issue 7 figures on the smoke preset, sharing the fig1/fig4 run cache ---------------------


def _flags(root, out):
    return ["--preset", "tiny", "--seeds", "0", "--splits", "0", "--runs", str(root / "runs"),
            "--out", str(root / out), "--workers", "1"]


@pytest.mark.slow
def test_fig7_scores_outcome_vs_composite_reward_runs(smoke_figures):
    from experiments import fig7

    root, _ = smoke_figures
    assert fig7.main(_flags(root, "out7")) == 0
    rows = read_csv(root / "out7" / "fig7_units.csv")
    assert {(r["condition"], r["set"]) for r in rows} == {(c, s) for c in fig7.CONDITIONS for s in fig7.SETS}
    for r in rows:  # an unfaithful solution is a right answer: never more of them than right answers
        assert 0 <= float(r["right_answer_wrong_trace"]) <= float(r["answer"]) + 1e-12
    summary = read_csv(root / "out7" / "fig7.csv")
    outcome = [r for r in summary if r["condition"] == "grpo"]
    assert all(float(r["answer_minus_outcome"]) == 0.0 for r in outcome)
    assert (root / "out7" / "fig7.png").stat().st_size > 0


@pytest.mark.slow
def test_fig8_predicts_every_target_and_scores_auroc(smoke_figures):
    from experiments import fig8

    root, _ = smoke_figures
    assert fig8.main(_flags(root, "out8")) == 0
    rows = read_csv(root / "out8" / "fig8_targets.csv")
    assert {r["source"] for r in rows} == {"protocol", "fig2"}
    unseen = [r for r in rows if r["source"] == "protocol" and r["target_set"] == "unseen"]
    assert unseen and all(r["pred[module]"] in ("0", "1") for r in unseen)
    # a local witness of a step's interface covers its module pairs: local implies module coverage
    assert all(r["pred[module]"] == "1" for r in rows if r["pred[local]"] == "1")
    assert all(0.0 <= float(r["score[local]"]) <= 1.0 for r in rows)
    assert all(0.0 <= float(r["score[module]"]) <= 1.0 for r in rows)
    summary = read_csv(root / "out8" / "fig8.csv")
    assert {r["criterion"] for r in summary} == {fig8.criterion_name(*c) for c in fig8.CRITERIA}
    # the enrichment check is scored on fig2's GRPO arms only, from their base's cached p0
    grpo = [r for r in rows if r["source"] == "fig2" and r["condition"].startswith("grpo")]
    assert grpo and all(r["pred[enrichment]"] in ("0", "1") for r in grpo)
    assert all(r["pred[enrichment]"] == "" for r in rows if not r["condition"].startswith("grpo"))
    # what RL is predicted to reach includes what SFT alone reaches, and saturated compositions add to it
    assert all(r["pred[enrichment]"] >= r["pred[sft_local]"] for r in grpo)
    assert all(r["pred[enrichment+saturated]"] >= r["pred[enrichment]"] for r in grpo)
    enrich = read_csv(root / "out8" / "fig8_enrichment.csv")
    assert {r["call"] for r in enrich} == set(fig8.ENRICHMENT)
    assert {r["condition"] for r in enrich} == {r["condition"] for r in grpo}
    assert list((root / "runs").glob("sft-*/fig8-p0-*.json"))  # p0 cached in the base's run directory


def test_auroc_counts_ties_half_and_needs_both_classes():
    from experiments.fig8 import auroc

    assert auroc([0.9, 0.1], [1, 0]) == 1.0
    assert auroc([0.1, 0.9], [1, 0]) == 0.0
    assert auroc([1, 1, 1], [1, 0, 0]) == 0.5  # a constant prediction is chance
    assert auroc([1, 0, 1, 0], [1, 1, 0, 0]) == 0.5
    assert math.isnan(auroc([0.3, 0.4], [1, 1]))


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=2, max_size=40))
def test_auroc_by_ranks_equals_the_pairwise_definition(pairs):
    from experiments.fig8 import auroc

    score, label = np.array([s / 3 for s, _ in pairs]), np.array([y for _, y in pairs])
    assume(label.any() and not label.all())
    pos, neg = score[label], score[~label]
    want = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(score, label) == pytest.approx(want, abs=1e-12)


@pytest.mark.slow
def test_fig2_and_fig3_curves_start_from_the_shared_base(smoke_figures):
    from experiments import fig2, fig3, heldout

    root, _ = smoke_figures
    for figure in ("fig2", "fig3"):
        assert {"fig2": fig2, "fig3": fig3}[figure].main(_flags(root, "out23")) == 0
        curves = read_csv(root / "out23" / f"{figure}_curves.csv")
        conds = set(heldout.conditions(figure)[1:])
        assert {r["condition"] for r in curves} == conds
        start = {(r["condition"], r["support"]): r["accuracy"] for r in curves if r["step"] == "0"}
        for sup in heldout.SUPPORTS:  # every continuation's step 0 is the same base on the same items
            assert len({start[(c, sup)] for c in conds}) == 1
        steps = {int(r["step"]) for r in curves}
        every = max(1, heldout.PRESETS["tiny"]["grpo"]["steps"] // heldout.CURVE_POINTS)
        assert steps == set(range(0, heldout.PRESETS["tiny"]["grpo"]["steps"] + 1, every))
        regime = read_csv(root / "out23" / f"{figure}_regime.csv")  # each GRPO arm's p0 and tied groups
        assert {r["condition"] for r in regime} == {c for c in conds if c.startswith("grpo")}
        assert all(0 <= float(r["zero_std_frac"]) <= 1 for r in regime)
        meta = json.loads((root / "out23" / f"{figure}.json").read_text())
        held = meta["split_specs"]["0"]["heldout"]
        assert all(r["heldout"] == "+".join(held) for r in curves)
    assert read_csv(root / "out23" / "fig3_units.csv")[0]["heldout"] == "map_halves"


@pytest.mark.slow
def test_fig6_keeps_policies_and_starts_at_zero_drift(smoke_figures):
    from experiments import fig6
    from hlsm.checkpoint import snapshots

    root, _ = smoke_figures
    assert fig6.main(_flags(root, "out6") + ["--every", "2"]) == 0
    rows = read_csv(root / "out6" / "fig6_units.csv")
    assert {r["condition"] for r in rows} == set(fig6.CONDITIONS)
    steps = protocol.PRESETS["tiny"]["grpo"]["steps"]
    kept = sorted({0, *range(2, steps + 1, 2), steps})  # every 2nd step and the last
    for r in rows:
        assert sorted(snapshots(root / "runs" / r["run"])) == kept
        if r["step"] == "0":  # the step-0 policy is the base itself
            assert float(r["kl"]) == pytest.approx(0.0, abs=1e-6) and float(r["rel_change"]) == 0.0
    control = [r for r in rows if r["condition"] == "control" and r["step"] == str(steps)]
    assert float(control[0]["rel_change"]) > 0  # labelled updates always move the weights


@pytest.mark.slow
def test_fig5_probes_are_cached_per_run(smoke_figures):
    from experiments import fig5

    root, _ = smoke_figures
    flags = _flags(root, "out5") + ["--targets", "skill"]
    assert fig5.main(flags) == 0
    cached = sorted((root / "runs").glob("*/fig5-*.json"))
    assert len(cached) == len(fig5.MODELS)  # one per model (the random init's file sits in the SFT run)
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert fig5.main(flags) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # re-read, not recomputed
    summary = read_csv(root / "out5" / "fig5.csv")
    assert {r["model"] for r in summary} == set(fig5.MODELS)
    idents = [r for r in summary if r["metric"] == "ident"]
    assert {r["model"] for r in idents} == set(fig5.MODELS)  # every model scored
    cells = {(r["model"], r["layer"], r["eval"]) for r in idents}
    assert len(cells) == len(idents) == len({r["model"] for r in idents}) * len({(r["layer"], r["eval"])
                                                                                for r in idents})
    assert all(0.0 <= float(r["mean"]) <= 1.0 for r in idents if r["mean"] != "nan")  # the score's range


@pytest.mark.slow
def test_regime_smoke_reports_every_criterion_and_never_writes_paper_figures(tmp_path, monkeypatch, capsys):
    from experiments import regime

    monkeypatch.chdir(tmp_path)
    assert regime.main(["--preset", "smoke", "--conditions", "explicit_nopos", "--seeds", "0", "--splits", "0",
                        "--rl", "--runs", str(tmp_path / "runs"), "--workers", "1"]) == 0
    out = tmp_path / "runs" / "figures-smoke"
    assert not (tmp_path / "paper_figures").exists()
    rows = read_csv(out / "regime.csv")
    assert {r["run_kind"] for r in rows} == {"sft", "grpo", "control", "grpo_atoms", "control_atoms"}
    base = next(r for r in read_csv(out / "regime_summary.csv") if r["run_kind"] == "sft")
    for k in ("c1_unseen", "c2_deeper", "c3_zero_std", "c4_unit_minutes"):
        assert base[k] in ("True", "False"), k
    assert 0.0 <= float(base["rl_zero_std"]) <= 1.0 and base["c3_source"] == "grpo runs"
    assert 0.0 <= float(base["acc/L4"]) <= 1.0 and 0.0 <= float(base["acc/L5"]) <= 1.0
    for name in ("regime.png", "regime.json"):
        assert (out / name).stat().st_size > 0
    assert "criteria 1" in capsys.readouterr().out
    # re-summarizing the written rows trains nothing and gives the same summary
    again = ["--preset", "smoke", "--from-csv", str(out / "regime.csv"), "--out", str(tmp_path / "again")]
    assert regime.main(again) == 0
    assert read_csv(tmp_path / "again" / "regime_summary.csv") == read_csv(out / "regime_summary.csv")
    assert (tmp_path / "again" / "regime_table1.md").read_text() == (out / "regime_table1.md").read_text()


def test_only_committed_presets_write_paper_figures_and_others_say_so(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.report import output_dir, save_figure

    assert str(output_dir(None, "cpu")) == "paper_figures"
    assert str(output_dir(None, "smoke")) == "runs/figures-smoke"  # a smoke run never clobbers a figure
    assert str(output_dir(str(tmp_path), "smoke")) == str(tmp_path)
    fig = plt.figure()
    save_figure(fig, tmp_path / "f")  # the preset of the last output_dir call: smoke
    assert any("not a result" in t.get_text() for t in fig.texts)
    output_dir(None, "cpu")
    fig2 = plt.figure()
    save_figure(fig2, tmp_path / "g")
    assert not fig2.texts and (tmp_path / "g.png").stat().st_size > 0


def test_the_cpu_presets_core_runs_are_the_regime_studys_runs():
    # fig1 and the protocol read the chosen regime's bases, GRPO arms and controls from the regime
    # study's cache: the same configs, so the same run directories
    from experiments import regime
    from experiments.runs import config_key

    for preset, sizes in (("tiny", "smoke"), ("cpu", "cpu")):
        unit = protocol.unit_configs(protocol.StudyConfig(preset=preset), 1, 2)
        plan = regime.unit_plan(sizes, regime.CHOSEN, 1, 2, rl=True)
        assert set(plan) <= set(unit)
        for name, (kind, cfg) in plan.items():
            assert unit[name][0] == kind and config_key(kind, unit[name][1].to_dict()) == config_key(
                kind, cfg.to_dict()), (preset, name)


@pytest.mark.slow
def test_planted_scores_the_checkers_calls_against_both_supports_runs(tmp_path, capsys):
    from experiments import planted

    flags = ["--preset", "tiny", "--seeds", "0", "--formats", "explicit", "--runs", str(tmp_path / "runs"),
             "--out", str(tmp_path / "out"), "--workers", "1"]
    assert planted.main(flags) == 0
    meta = json.loads((tmp_path / "out" / "planted.json").read_text())
    assert meta["pair_identified"] == {"together": {"rotate_left": False, "reverse": False},
                                       "apart": {"rotate_left": True, "reverse": True}}
    targets = read_csv(tmp_path / "out" / "planted_targets.csv")
    assert {t["support"] for t in targets} == {"together", "apart"}
    assert all(t["module_reachable"] == "False" for t in targets if t["support"] == "together")
    assert any(t["module_reachable"] == "True" for t in targets if t["support"] == "apart")
    summary = read_csv(tmp_path / "out" / "planted.csv")
    acc = [r for r in summary if r["kind"] == "accuracy"]
    assert {(r["support"], r["eval"]) for r in acc} == {(s, e) for s in planted.SUPPORTS for e in planted.EVALS}
    assert all(0 <= float(r["mean"]) <= 1 for r in acc)
    assert {r["support"] for r in summary if r["kind"] == "causal"} == set(planted.SUPPORTS)
    n_runs = len(list((tmp_path / "runs").iterdir()))
    assert n_runs == 2
    capsys.readouterr()
    assert planted.main(flags) == 0  # cached: nothing retrains
    assert len(list((tmp_path / "runs").iterdir())) == n_runs


@pytest.mark.parametrize("stem", sorted(replot.FIGURES))
def test_every_committed_figure_redraws_from_its_saved_numbers(stem, tmp_path, monkeypatch):
    """``python -m experiments.replot``: each figure's current plot function on its committed JSON / CSV
    numbers; it writes the PNG and PDF and leaves every number file as it was."""
    import shutil
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "paper_figures"
    if not (committed / f"{stem}.json").exists():
        pytest.skip(f"no committed {stem}.json")
    for f in committed.glob(f"{stem}*"):
        if f.suffix in (".json", ".csv"):
            shutil.copy(f, tmp_path / f.name)
    numbers = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    monkeypatch.setattr(protocol, "run_study", lambda *a, **k: pytest.fail("a replot must not train"))
    assert replot.main(["--out", str(tmp_path), stem]) == 0
    assert (tmp_path / f"{stem}.png").stat().st_size > 0 and (tmp_path / f"{stem}.pdf").stat().st_size > 0
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.suffix in (".json", ".csv")} == numbers


def test_replot_names_an_unknown_figure():
    with pytest.raises(SystemExit) as e:
        replot.main(["fig99"])
    assert e.value.code == 2
