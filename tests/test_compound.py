"""The compound-trace regime study: its conditions' trace formats, its criteria, one tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from experiments import compound, fair, regime, replot
from experiments.report import read_csv
from hlsm.names import ATOMS, SEEN, SFT, UNSEEN
from hlsm.sft import data_streams, make_split
from hlsm.text import FORMS, trace_form


@pytest.mark.parametrize("condition", compound.CONDITIONS)
def test_compound_conditions_install_atoms_explicitly_and_hide_them_in_compounds(condition):
    cfg = fair.base("cpu", (0, 0), condition).validate()
    streams = data_streams(cfg, make_split(cfg.split))
    want = {"compound_values": "values", "compound_chunked": "chunked", "compound_answer": "answer"}[condition]
    for atom in streams[ATOMS].sample(20):
        assert trace_form(atom.completion, atom.depth) == "explicit"
    for comp in streams[SFT].sample(20):  # compounds only (L = 2, 3), each one canonical trace hiding the atoms
        assert comp.depth in (2, 3) and trace_form(comp.completion, comp.depth) == want
    # everything else is the chosen regime's: model, sizes, and the split but for SFT's depths
    chosen = fair.base("cpu", (0, 0))
    assert cfg.model == chosen.model and cfg.steps == chosen.steps and cfg.lr == chosen.lr
    assert {k: v for k, v in cfg.split.items() if k != "sft_depths"} == \
           {k: v for k, v in chosen.split.items() if k != "sft_depths"}


def _row(cond, seed, at, seen, unseen, l4, tied):
    return {"condition": cond, "split": 0, "seed": seed, "at_plateau": at, "gap": seen - unseen,
            f"greedy/{SEEN}/L3": seen, f"greedy/{UNSEEN}/L3": unseen, "greedy/L4": l4, "rl_zero_std": tied}


def test_criteria_are_read_on_units_at_plateau_and_undecided_without_an_interval():
    ok = [_row("c", s, True, 0.7, 0.4 + 0.01 * s, 0.05 + 0.01 * s, 0.3) for s in range(3)]
    assert compound.judge(ok, 3) == {"plateau": True, "gap": True, "unseen": True, "deeper": True, "tied": True,
                                     "n_at": 3}
    one = compound.judge(ok[:1], 3)
    assert one["deeper"] is None and one["gap"] is True  # one unit: no interval, so L4 is not decided
    assert compound.judge([_row("c", 0, True, 0.7, 0.4, 0.01, 0.3)], 3)["deeper"] is False  # below 3% either way
    off = compound.judge([dict(ok[0], at_plateau=False, gap=-1.0), *ok[1:]], 3)  # reported, left out
    assert off["plateau"] is True and off["n_at"] == 2 and off["gap"] is True
    nogap = compound.judge([_row("c", s, True, 0.5, 0.45, 0.05, 0.6) for s in range(3)], 3)
    assert nogap["gap"] is False and nogap["tied"] is False
    none = compound.judge([dict(r, at_plateau=False) for r in ok], 3)
    assert none["plateau"] is False and none["gap"] is None and none["deeper"] is None
    # the L + 1 interval crosses 0 (0, 0, 0.2: mean 6.7%), unseen outside 15-70% either side
    crossing = compound.judge([_row("c", s, True, 0.9, u, l4, 0.3) for s, u, l4 in ((0, 0.1, 0), (1, 0.1, 0),
                                                                                     (2, 0.1, 0.2))], 3)
    assert crossing["deeper"] is False and crossing["unseen"] is False
    assert compound.judge([_row("c", 0, True, 0.95, 0.8, 0.05, 0.3)], 3)["unseen"] is False
    assert all(type(v) is bool for k, v in compound.judge(ok, 3).items() if k != "n_at")  # JSON booleans
    assert compound.judge([dict(ok[0], rl_zero_std=float("nan"))], 3)["tied"] is None  # not measured


def test_tiny_compound_screen_end_to_end(tmp_path):
    """The pipeline on the tiny preset (it learns nothing): one plateau chain, the base's numbers, the
    criteria, the files."""
    assert compound.main(["--preset", "tiny", "--seeds", "0", "--splits", "0", "--conditions", "compound_answer",
                          "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    rows = read_csv(tmp_path / "out" / "compound.csv")
    assert len(rows) == 1 and rows[0]["condition"] == "compound_answer"
    for key in ("gap", "greedy/unseen/L3", "t1/unseen/L3", "greedy/L4", "rl_zero_std", "form/answer/unseen/L3"):
        assert rows[0][key] != ""
    md = (tmp_path / "out" / "compound.md").read_text()
    assert "`compound_answer`" in md and "criteria" in md.lower() and (tmp_path / "out" / "compound.png").exists()
    assert set(regime.COMPOUND_CRITERIA) == {"gap_min", "unseen_lo", "unseen_hi", "deeper_min", "tied_max"}
    # re-reported from its CSV: the same rows, the same table, nothing trained
    again = tmp_path / "again"
    assert compound.main(["--from-csv", str(tmp_path / "out" / "compound.csv"), "--out", str(again)]) == 0
    assert (again / "compound.csv").read_bytes() == (tmp_path / "out" / "compound.csv").read_bytes()
    assert (again / "compound.md").read_text() == md
    png = (again / "compound.png").read_bytes()
    (again / "compound.png").unlink()
    assert replot.main(["--out", str(again), "compound"]) == 0 and (again / "compound.png").read_bytes() == png


def test_max_blocks_is_a_budget_of_the_chains_and_bad_values_are_one_line(tmp_path, capsys):
    args = ["--preset", "tiny", "--seeds", "0", "--splits", "0", "--conditions", "compound_answer",
            "--runs", str(tmp_path / "runs"), "--workers", "1"]
    assert compound.main([*args, "--out", str(tmp_path / "none"), "--max-blocks", "0"]) == 0
    row = read_csv(tmp_path / "none" / "compound.csv")[0]
    assert row["updates"] == str(fair.base("tiny", (0, 0), "compound_answer").steps) and row["at_plateau"] == "False"
    with pytest.raises(SystemExit) as e:
        compound.main([*args, "--out", str(tmp_path / "bad"), "--max-blocks", "-1"])
    assert e.value.code == 2 and "--max-blocks" in capsys.readouterr().err


@pytest.mark.slow
def test_fair_protocol_and_its_probes_run_in_a_compound_condition(tmp_path):
    """The fair test in a compound regime (one tiny unit), then fig5 --fair on its runs: every fair arm
    probed, on the compound format its runs trained on, each probe cached in its run."""
    from experiments import fig5

    runs, out = tmp_path / "runs", tmp_path / "out"
    unit = ["--splits", "0", "--seeds", "0", "--runs", str(runs), "--workers", "1"]
    assert fair.main(["--preset", "tiny", "--condition", "compound_chunked", "--out", str(out), *unit]) == 0
    csv = out / "compound_chunked" / "fair.csv"
    rows = read_csv(csv)
    assert {r["regime"] for r in rows} == {"compound_chunked"}
    md = (out / "compound_chunked" / "fair_table1.md").read_text()
    forms = md.split("### The forms of the rollouts")[1]  # every form of every arm, before RL and after
    assert all(f"{f} L3" in forms for f in FORMS) and "| `base` |" in forms and "| `grpo` |" in forms
    assert fig5.main(["--preset", "tiny", "--fair", str(csv), "--out", str(tmp_path / "out5"), *unit]) == 0
    meta = json.loads((tmp_path / "out5" / "fig5.json").read_text())
    assert "regime compound_chunked" in meta["subtitle"] and meta["tasks"] == {"skill": fig5.FAIR_ARMS}
    probes = read_csv(tmp_path / "out5" / "fig5_probes.csv")
    assert {r["model"] for r in probes} == set(fig5.FAIR_MODELS)
    want = {fig5.FAIR_ARMS[m] for m in fig5.FAIR_MODELS if m != "random"}
    assert {r["run"] for r in probes} == {r["run"] for r in rows if r["condition"] in want}
    assert len(list(runs.glob("*/fig5-*.json"))) == len(fig5.FAIR_MODELS)
    diffs = read_csv(tmp_path / "out5" / "fig5_differences.csv")  # GRPO paired against each reference
    assert {d["minus"] for d in diffs} == {"sft", "control", "rft"} and {d["n"] for d in diffs} == {"1"}


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_heldout_figures_run_in_a_compound_condition_with_every_atom_in_the_atoms_format(preset):
    """fig2 / fig3 --condition: the condition's task, model and formats; the held-out modules' atoms
    (SFT's and the scored ones) shown as the other atoms; the chosen regime's configs unchanged."""
    from experiments import heldout
    from hlsm.names import EVAL_HELDOUT_ATOMS, HELDOUT_ATOMS, RL_ATOMS

    assert heldout.preset_of(preset) == heldout.PRESETS[preset]
    spec = regime.CONDITIONS["compound_chunked"]
    for figure in heldout.SETUPS:
        unit = heldout.unit_configs(figure, preset, 0, 0, condition="compound_chunked")
        base = unit["sft"][1].validate()  # every format names a support of the held-out split
        assert (base.fmt, base.granularity) == (spec["fmt"], spec["granularity"])
        atoms = spec["formats"][ATOMS]
        assert all(base.formats[s] == atoms for s in (ATOMS, HELDOUT_ATOMS, EVAL_HELDOUT_ATOMS, RL_ATOMS))
        assert base.split["sft_depths"] == spec["split"]["sft_depths"]
        assert unit.keys() == heldout.unit_configs(figure, preset, 0, 0).keys()


def test_fig5_fair_reads_the_claim_units_and_names_what_it_cannot_probe(tmp_path):
    """fig5 --fair: the units at plateau among those asked for; a file, unit or run it cannot probe is
    one line naming it."""
    from experiments import fig5
    from experiments.report import write_csv

    runs = tmp_path / "runs"
    rows = []
    for (sp, seed), at in {(0, 0): True, (0, 1): False, (1, 0): True}.items():
        for arm in ("base", "grpo", "control", "rft", "more_sft"):
            name = f"{arm}-{sp}{seed}"
            (runs / name).mkdir(parents=True)
            (runs / name / "config.json").write_text("{}")
            rows.append({"split": sp, "seed": seed, "condition": arm, "run": name, "at_plateau": at})
    write_csv(rows, tmp_path / "fair.csv")
    got, at, cond = fig5.fair_runs(str(tmp_path / "fair.csv"), str(runs), [(0, 0), (0, 1), (1, 1)])
    assert at == [(0, 0)]  # (0, 1) missed the rule; (1, 0) was not asked for; (1, 1) is not in the file
    assert got[("skill", 0, 0, "rft")] == runs / "rft-00"
    assert cond == regime.CHOSEN  # a fair.csv without a regime column is the chosen regime's
    with pytest.raises(ValueError, match="no unit of"):
        fig5.fair_runs(str(tmp_path / "fair.csv"), str(runs), [(0, 1)])
    with pytest.raises(ValueError, match="--runs .*no run base-00"):
        fig5.fair_runs(str(tmp_path / "fair.csv"), str(tmp_path / "elsewhere"), [(0, 0)])
    write_csv([r for r in rows if r["condition"] != "rft"], tmp_path / "no_rft.csv")
    with pytest.raises(ValueError, match="has no 'rft' row"):
        fig5.fair_runs(str(tmp_path / "no_rft.csv"), str(runs), [(0, 0)])
    write_csv([{k: v for k, v in r.items() if k != "at_plateau"} for r in rows], tmp_path / "plateau.csv")
    with pytest.raises(ValueError, match="no column at_plateau"):
        fig5.fair_runs(str(tmp_path / "plateau.csv"), str(runs), [(0, 0)])


def test_forms_table_averages_each_form_over_units_and_is_empty_without_form_columns():
    rows = [{"split": 0, "seed": s, "condition": c, **{f"sampled_form/{f}/L{d}": 0.0 for f in FORMS for d in (3, 4)},
             f"sampled_form/{form}/L3": 1.0, f"sampled_form/{form}/L4": 1.0}
            for s, (c, form) in enumerate([("base", "chunked"), ("base", "chunked"), ("grpo", "explicit")])]
    md = fair.forms_table(rows, 3)
    base = next(line for line in md.splitlines() if line.startswith("| `base` |")).split(" | ")
    grpo = next(line for line in md.splitlines() if line.startswith("| `grpo` |")).split(" | ")
    chunked, explicit = 2 + FORMS.index("chunked"), 2 + FORMS.index("explicit")
    assert base[1] == "2" and base[chunked] == "100.0 ± 0.0" and base[explicit] == "0.0 ± 0.0"
    assert grpo[1] == "1" and grpo[explicit].startswith("100.0")
    assert fair.forms_table([{"condition": "base", "greedy/L3": 0.5}], 3) == ""
