"""Evaluation: pass@k, per-step credit, the tidy table's groupings, CSV, and an end-to-end call."""

from __future__ import annotations

import csv

import pytest
import torch

from hlsm.evaluate import (
    composition_name,
    evaluate,
    lookup,
    pass_at_k,
    step_correct,
    summarize,
    write_csv,
)
from hlsm.model import HLSM
from hlsm.policy import Policy, PolicyConfig
from hlsm.support import EVAL_INPUTS, TRAIN_INPUTS, Split, Support
from hlsm.text import FORMS, REWARDS

torch.set_num_threads(1)
SKILLS = ("reverse", "shift_up")


def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples: some draw of k is right
    with pytest.raises(ValueError, match="pass@5"):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("fmt", ["values", "explicit"])
def test_step_credit(fmt):
    ex = HLSM(depth=2, seed=0, skills=SKILLS, routings=("chain",), fmt=fmt)[3]
    assert step_correct(ex, ex.completion) == [True, True]
    first_wrong = ex.completion.replace(ex.steps[0].value, "zz", 1)
    assert step_correct(ex, first_wrong) == [False, True]
    assert step_correct(ex, "garbage") == [False, False]
    if fmt == "explicit":  # right values under the wrong module tokens earn nothing
        swapped = ex.completion.replace("R0", "R1", 1)
        assert step_correct(ex, swapped)[0] is False


def test_step_credit_granularity_and_answer_format():
    ex = HLSM(depth=2, seed=0, skills=SKILLS, routings=("chain",), granularity=2)[0]
    assert step_correct(ex, ex.completion) == [True, True]  # one chunk shows both steps
    ans = HLSM(depth=2, seed=0, skills=SKILLS, routings=("chain",), fmt="answer")[0]
    assert step_correct(ans, ans.completion) is None


def record(ex, text):
    return {"example": ex, "completion": text, **{k: fn(ex, text) for k, fn in REWARDS.items()},
            "steps": step_correct(ex, text)}


def test_summarize_groups_by_depth_composition_and_module():
    a = HLSM(depth=2, seed=0, compositions=[(("chain", "reverse"), ("chain", "shift_up"))]).sample(3)
    b = HLSM(depth=1, seed=0, compositions=[(("chain", "shift_up"),)]).sample(2)
    wrong = a[2].completion.replace(a[2].answer, "zzz")  # right trace, wrong answer (and last value)
    recs = [record(a[0], a[0].completion), record(a[1], a[1].completion), record(a[2], wrong),
            record(b[0], b[0].completion), record(b[1], "#nope")]
    rows = summarize(recs, "mix")
    assert lookup(rows, "mix")["answer"] == pytest.approx(3 / 5)
    assert lookup(rows, "mix")["n"] == 5
    assert lookup(rows, "mix", "depth", "2")["answer"] == pytest.approx(2 / 3)
    assert lookup(rows, "mix", "depth", "1")["answer"] == pytest.approx(1 / 2)
    comp = composition_name(a[0].composition)
    assert comp == "chain.reverse+chain.shift_up"
    assert lookup(rows, "mix", "composition", comp)["n"] == 3
    # module rows: items using the module, and only the steps that use it
    rev = lookup(rows, "mix", "module", "reverse")
    assert rev["n"] == 3 and rev["step"] == 1.0  # reverse (step 1) is right in all three
    up = lookup(rows, "mix", "module", "shift_up")
    assert up["n"] == 5 and up["step"] == pytest.approx(3 / 5)  # a[2] and b[1] get shift_up wrong
    assert lookup(rows, "mix", "module", "chain")["n"] == 5
    with pytest.raises(KeyError):
        lookup(rows, "mix", "module", "atbash")
    with pytest.raises(ValueError, match="grouping"):
        summarize(recs, "mix", by=("skill",))


def test_right_answer_wrong_trace_counts_unfaithful_solutions():
    a = HLSM(depth=2, seed=0, compositions=[(("chain", "reverse"), ("chain", "shift_up"))]).sample(3)
    unfaithful = a[0].completion.replace(a[0].steps[0].value, "zz", 1)  # wrong step 1, right answer
    assert REWARDS["answer"](a[0], unfaithful) == 1.0
    recs = [record(a[0], unfaithful), record(a[1], a[1].completion), record(a[2], "#nope")]
    row = lookup(summarize(recs, "s"), "s")
    assert row["right_answer_wrong_trace"] == pytest.approx(1 / 3)  # a wrong answer is not counted
    ans = HLSM(depth=2, seed=0, skills=SKILLS, routings=("chain",), fmt="answer")[0]
    row = lookup(summarize([record(ans, ans.completion)], "s"), "s")
    assert row["right_answer_wrong_trace"] != row["right_answer_wrong_trace"]  # nan: no trace to check


def test_evaluate_end_to_end_and_csv(tmp_path):
    common = dict(depths=(2,), skills=SKILLS, routings=("chain",), input_len=(4, 5), alphabet="abcd")
    split = Split("t", train={"sft": Support(input_buckets=TRAIN_INPUTS, **common)},
                  eval={"seen": Support(input_buckets=EVAL_INPUTS, **common),
                        "atoms": Support(**{**common, "depths": (1,)}, input_buckets=EVAL_INPUTS)})
    torch.manual_seed(0)
    model = Policy(PolicyConfig(n_layer=1, n_head=2, n_embd=32, block_size=64))
    rows = evaluate(model, split, n=12, samples=4, pass_k=(1, 4), max_new_tokens=24)
    assert {r["support"] for r in rows} == {"seen", "atoms"}
    assert {r["by"] for r in rows} == {"all", "depth", "composition", "module"}
    for s in ("seen", "atoms"):
        top = lookup(rows, s)
        assert top["n"] == 12 and 0 <= top["pass@1"] <= top["pass@4"] <= 1
    assert sum(r["n"] for r in rows if r["support"] == "seen" and r["by"] == "composition") == 12
    for r in rows:  # every completion takes exactly one form, greedy and sampled
        assert sum(r[f"form/{f}"] for f in FORMS) == pytest.approx(1.0)
        assert sum(r[f"sampled_form/{f}"] for f in FORMS) == pytest.approx(1.0)
    assert evaluate(model, split, n=12, max_new_tokens=24) == evaluate(model, split, n=12, max_new_tokens=24)
    with pytest.raises(ValueError, match="samples"):
        evaluate(model, split, n=2, samples=2, pass_k=(4,))

    path = tmp_path / "eval.csv"
    write_csv(rows, path)
    with open(path) as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows) and float(back[0]["answer"]) == pytest.approx(rows[0]["answer"])


def test_evaluate_refuses_a_training_support_name():
    """The old default eval name 'atoms' is a training support: scoring it was the issue-15 leak."""
    import hlsm
    from hlsm.sft import SFTConfig

    split = hlsm.compositional_split(depth=2, skills=("reverse", "shift_up"), routings=("chain",), deeper=())
    model = Policy(PolicyConfig.preset("smoke"))
    with pytest.raises(ValueError, match="'atoms' is not an evaluation support.*did you mean 'eval_atoms'"):
        evaluate(model, split, ("atoms",), n=2)
    assert {r["support"] for r in evaluate(model, split, ("atoms",), n=2, allow_train=True)} == {"atoms"}
    with pytest.raises(ValueError, match="SFTConfig.eval_supports: 'atoms' is not an evaluation support"):
        SFTConfig(split=split, eval_supports=("seen", "atoms")).validate()
