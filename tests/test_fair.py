"""The fair test (experiments.fair): its rules as pure functions, every arm's config, and a tiny study."""

from __future__ import annotations

import json
import math

import pytest
import torch

from experiments import fair
from experiments.report import read_csv
from hlsm.checkpoint import read_config
from hlsm.control import labelled_control, rft_control
from hlsm.grpo_loss import RFT
from hlsm.names import SEEN, UNSEEN, VALIDATION
from hlsm.support import make_split

torch.set_num_threads(1)


def _checks(*accs):
    return [{"updates": u, SEEN: s, VALIDATION: v} for u, s, v in accs]


def test_plateau_gain_spans_at_least_the_last_fifth_of_all_updates():
    checks = _checks((3000, 0.50, 0.40), (4000, 0.56, 0.47), (5000, 0.565, 0.475))
    # at 5000 the last fifth starts at 4000: gains 0.5 and 0.5 points, under the 1-point rule
    gain = fair.plateau_gain(checks)
    assert gain[SEEN] == pytest.approx(0.005) and gain[VALIDATION] == pytest.approx(0.005)
    assert fair.at_plateau(gain)
    # at 6000 the check at 4800 or earlier is 4000's: 1.5 points of seen accuracy is not a plateau
    gain = fair.plateau_gain([*checks, {"updates": 6000, SEEN: 0.575, VALIDATION: 0.47}])
    assert gain[SEEN] == pytest.approx(0.015) and not fair.at_plateau(gain)
    # the validation support alone can keep a base from its plateau; one check decides nothing
    assert not fair.at_plateau(fair.plateau_gain(_checks((3000, 0.5, 0.40), (4000, 0.5, 0.42))))
    assert math.isnan(fair.plateau_gain(_checks((3000, 0.5, 0.4)))[SEEN])
    assert not fair.at_plateau(fair.plateau_gain(_checks((3000, 0.5, 0.4))))


def test_rates_are_chosen_on_the_mean_validation_score_and_ties_go_to_the_smaller():
    rows = [{"arm": "grpo", "lr": lr, "val_score": v} for lr, v in ((1e-5, 0.4), (1e-4, 0.5), (1e-4, 0.3),
                                                                      (3e-4, 0.41), (3e-4, 0.39))]
    rows += [{"arm": "control", "lr": lr, "val_score": 0.6} for lr in (1e-5, 1e-4, 3e-4)]
    rows += [{"arm": "rft", "lr": 1e-5, "val_score": float("nan")}, {"arm": "rft", "lr": 1e-4, "val_score": 0.1}]
    assert fair.choose_rates(rows, (1e-5, 1e-4, 3e-4)) == {"grpo": 1e-5, "control": 1e-5, "rft": 1e-4}


def test_validation_is_carved_out_of_the_held_out_compositions_only():
    for preset in fair.PRESETS:
        spec = fair.split_spec(preset, 1)
        split = make_split(spec)
        split.check_disjoint()
        assert spec["validation"] == list(fair.VALIDATION_BUCKETS) and spec["heldout"][0] == fair.VALIDATION_BUCKETS[1]
        base = fair.regime.split_spec(fair.PRESETS[preset]["regime"], fair.regime.CHOSEN, 1)
        assert {k: v for k, v in spec.items() if k not in ("validation", "heldout")} == \
               {k: v for k, v in base.items() if k != "heldout"}  # SFT and RL see exactly the regime's supports
        assert VALIDATION in split.unseen and UNSEEN in split.unseen


def test_report_keeps_units_off_plateau_out_of_the_claim_rows(tmp_path):
    """Claim rows come only from units at plateau; the others are reported in a labelled table of all units."""
    keys = [f"{m}/L{d}" for m in ("greedy", "t1", f"pass{fair.SAMPLES}") for d in (3, 4, 5)]
    rows = [{"split": 0, "seed": seed, "condition": cond, "at_plateau": seed == 0,
             **{k: acc + 0.01 * seed for k in keys}}
            for seed in (0, 1, 2) for cond, acc in (("base", 0.5), ("more_sft", 0.55), ("grpo", 0.6))]
    md = fair.report_tables(rows, 3, 3, tmp_path)
    claim = {r["condition"]: r for r in read_csv(tmp_path / "fair_summary.csv")}
    every = {r["condition"]: r for r in read_csv(tmp_path / "fair_summary_all.csv")}
    assert claim["base"]["n"] == "1" and float(claim["grpo - base"]["greedy/L3"]) == pytest.approx(0.1)
    assert every["base"]["n"] == "3" and float(every["base"]["greedy/L4"]) == pytest.approx(0.51)
    assert "All 3 units, 1 of 3 at plateau" in md and "reported, not claim rows" in md
    assert (tmp_path / "fair.png").exists() and (tmp_path / "fair_all.png").exists()
    assert (tmp_path / "fair_curves.png").exists()
    # no unit at plateau: no claim rows, no empty figure, all units still reported
    none = tmp_path / "none"
    md = fair.report_tables([dict(r, at_plateau=False) for r in rows], 3, 3, none)
    assert "None: no base met the plateau rule" in md and "0 of 3 at plateau" in md
    assert read_csv(none / "fair_summary.csv") == [] and not (none / "fair.png").exists()


@pytest.mark.slow
def test_tiny_study_arms_references_grid_and_table(tmp_path, capsys):
    """One command runs the plateau bases, the grid and Table 1; every arm starts from the unit's plateau
    base and mirrors its GRPO arm; a second run trains nothing and writes the same table."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["--preset", "tiny", "--stage", "table", "--dynamic", "--splits", "0", "--seeds", "0", "1", "--runs",
            str(runs), "--out", str(out)]
    assert fair.main(argv) == 0
    p = fair.PRESETS["tiny"]
    grid = read_csv(out / "fair_grid.csv")
    arms = {**fair.ARMS, **fair.DYNAMIC_ARMS}
    assert len(grid) == 2 * len(arms) * len(p["lrs"])
    chosen = json.loads((out / "fair_grid.json").read_text())["chosen"]
    assert set(chosen) == set(arms) and all(v in p["lrs"] for v in chosen.values())
    rows = read_csv(out / "fair.csv")
    assert sorted(r["condition"] for r in rows) == sorted(["base", *arms] * 2)
    keys = [f"{m}/L{d}" for m in ("greedy", "t1", f"pass{fair.SAMPLES}") for d in (3, 4, 5)]
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in keys)
    assert all(float(r[f"pass{fair.SAMPLES}/L3"]) >= float(r["t1/L3"]) for r in rows)
    summary = {r["condition"]: r for r in read_csv(out / "fair_summary.csv")}
    for arm, refs in {**fair.REFERENCES, **fair.DYNAMIC_REFERENCES}.items():
        assert all(summary[f"{arm} - {ref}"]["n"] == "2" for ref in refs)
    plateau = read_csv(out / "fair_plateau.csv")
    assert all(json.loads(r["checks"])[0]["updates"] == 50 for r in plateau)
    for stem in fair.FIGURE_NUMBERS:  # every figure beside a record of what drew it
        if (out / f"{stem}.png").exists():
            assert json.loads((out / f"{stem}.json").read_text())["provenance"]["git"]
    # every arm: the unit's plateau base, its GRPO arm's prompts, rates from the grid
    state = fair.plateau_bases("tiny", [(0, 0)], str(runs))[(0, 0)]
    cfgs = {arm: fair.arm_config("tiny", arm, chosen[arm], (0, 0), state)[1] for arm in fair.ARMS}
    assert all(c.init == str(state["chain"][-1]) for c in cfgs.values())
    for arm in fair.RL_ARMS:
        g = cfgs[arm]
        suffix = arm[len("grpo"):]
        assert cfgs["rft" + suffix].objective == RFT
        assert cfgs["rft" + suffix].to_dict() == rft_control(fair.arm_config(
            "tiny", arm, chosen["rft" + suffix], (0, 0), state)[1]).to_dict()
        assert cfgs["control" + suffix].to_dict() == labelled_control(fair.arm_config(
            "tiny", arm, chosen["control" + suffix], (0, 0), state)[1]).to_dict()
        assert g.steps == p["steps"] and g.warmup_steps == fair.WARMUP
    # the dynamic-sampling arm's controls train on the prompts its run (at its chosen rate) kept
    dyn = fair.arm_config("tiny", "grpo_dyn", chosen["grpo_dyn"], (0, 0), state)[1]
    assert dyn.dynamic_sampling and dyn.to_dict() == {**cfgs["grpo"].to_dict(), "dynamic_sampling": True,
                                                      "lr": chosen["grpo_dyn"]}
    [followed] = [d for d in runs.iterdir() if d.name.startswith("grpo-") and read_config(d) == dyn.to_dict()]
    control = fair.arm_config("tiny", "control_dyn", chosen["control_dyn"], (0, 0), state, followed)[1]
    rft = fair.arm_config("tiny", "rft_dyn", chosen["rft_dyn"], (0, 0), state, followed)[1]
    assert control.items_from == rft.prompts_from == str(followed) and rft.objective == RFT
    assert control.lr == chosen["control_dyn"] and rft.lr == chosen["rft_dyn"] and not rft.dynamic_sampling
    more = cfgs["more_sft"]
    assert more.train_supports == state["configs"][0].train_supports and more.data_offset == state["offset"] > 0
    assert more.batch_size == cfgs["control"].batch_size and more.steps == cfgs["control"].steps
    printed = capsys.readouterr().out
    assert "`grpo` − `rft`" in printed and "units at plateau: 2 / 2" in printed
    assert "chosen at an edge of the grid" in printed  # two rates: every choice is an edge, and it says so
    table = (out / "fair_table1.md").read_text()
    assert fair.main(argv) == 0  # cached: nothing retrains, the same table
    assert (out / "fair_table1.md").read_text() == table


def test_curves_start_every_arm_at_its_units_base():
    """Controls check from update 50; their update-0 point is the unit's base, read from an RL arm's."""
    def row(seed, cond, curve):
        return {"split": 0, "seed": seed, "condition": cond, "curve": json.dumps(curve)}
    rows = [row(0, "base", {}), row(1, "base", {}),
            row(0, "grpo", {"0": {UNSEEN: 0.5}, "50": {UNSEEN: 0.7}}),
            row(1, "grpo", {"0": {UNSEEN: 0.6}, "50": {UNSEEN: 0.9}}),
            row(0, "control", {"50": {UNSEEN: 0.8}}), row(1, "control", {"50": {UNSEEN: 1.0}})]
    means = fair.curve_means(rows, UNSEEN)
    assert set(means) == {"grpo", "control"}
    assert [k for k, _ in means["control"]] == [0, 50] and [k for k, _ in means["grpo"]] == [0, 50]
    assert [y for _, y in means["control"]] == pytest.approx([0.55, 0.9])
    assert [y for _, y in means["grpo"]] == pytest.approx([0.55, 0.8])


def test_table_logs_what_the_sampled_arms_learned_from():
    """p0, the last rewards and the tied groups of each sampled arm sit under Table 1; labelled arms have none."""
    keys = [f"{m}/L{d}" for m in ("greedy", "t1", f"pass{fair.SAMPLES}") for d in (3, 4, 5)]
    rows = [{"split": 0, "seed": seed, "condition": cond, **{k: 0.5 for k in keys}, **stats}
            for seed in (0, 1)
            for cond, stats in (("base", {}), ("control", {}),
                                ("grpo", {"reward_first": 0.4 + 0.2 * seed, "reward_last": 0.9, "zero_std_frac": 0.7}))]
    md = fair.table(rows, 3)[1]
    assert "| `grpo` | 2 | 50.0 ± " in md and "| 90.0 ± 0.0 | 70.0 ± 0.0 |" in md
    assert "| `control` | 2 | 50.0" in md.split("sampled arm")[0] and "`control`" not in md.split("sampled arm")[1]


def test_a_rate_grid_other_than_the_one_the_rates_were_chosen_on_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "fair_grid.json").write_text(json.dumps({"lrs": [1e-4, 1e-3], "chosen": {}}))
    with pytest.raises(SystemExit):
        fair.main(["--preset", "tiny", "--stage", "table", "--lrs", "3e-6", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lrs 3e-06" in err[0] and "run --stage grid" in err[0]
    with pytest.raises(SystemExit):
        fair.main(["--preset", "tiny", "--lrs", "0", "--out", str(tmp_path)])
    assert "'0': a finite number > 0" in capsys.readouterr().err
