"""Supports and splits: membership, JSON, and the disjointness proofs (checked against samples)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlsm
from hlsm import HLSM, LeakageError, Split, Support
from hlsm.support import compositions_disjoint, inputs_disjoint, is_inside, items_disjoint

SMALL = dict(skills=("reverse", "sort_asc", "shift_up", "evens"), routings=("chain", "concat", "skip"))


def sample_items(support, n=300, seed=0):
    return [(ex.x, ex.composition) for ex in HLSM(support=support, seed=seed).sample(n)]


@pytest.mark.parametrize(
    "split",
    [
        hlsm.compositional_split(depth=3),
        hlsm.compositional_split(depth=2, partition_seed=3, deeper=(3, 4)),
        hlsm.compositional_split(depth=3, sft_missing=("sort_asc", "riffle"), sft_depths=(1, 2, 3)),
        hlsm.compositional_split(depth=3, heldout=(850, 1000), validation=(750, 850)),
        hlsm.heldout_split(("sort_asc", "riffle")),
        hlsm.heldout_split(("concat",), depth=2),
    ],
    ids=lambda s: s.name,
)
def test_paper_splits_are_proven_disjoint_and_samples_agree(split):
    proof = split.check_disjoint()
    assert len(proof) == len(split.train) * len(split.eval)
    for e_name, e in split.eval.items():
        items = sample_items(e, 200)
        for t in split.train.values():
            for x, comp in items:
                assert not t.contains_item(x, comp)
                if e_name in split.unseen:
                    assert not t.contains(comp)


def test_split_roles_follow_the_paper():
    s = hlsm.compositional_split(depth=3)
    assert is_inside(s.train["rl_inside"], s.train["sft"])
    assert not is_inside(s.train["rl"], s.train["sft"])
    assert compositions_disjoint(s.train["rl"], s.train["sft"])[0]  # RL beyond the SFT support
    assert s.train["atoms"].depths == (1,) and s.eval["deeper"].depths == (4, 5, 6)
    h = hlsm.heldout_split(("sort_asc",))
    assert "sort_asc" not in h.train["sft"].skills
    assert all("sort_asc" in {sk for _, sk in comp} for _, comp in sample_items(h.train["rl_atoms"], 100))
    assert all(len(comp) == 3 for _, comp in sample_items(h.train["rl_composed"], 100))


@settings(max_examples=40, deadline=None)
@given(
    a=st.tuples(st.integers(0, 999), st.integers(1, 1000)),
    b=st.tuples(st.integers(0, 999), st.integers(1, 1000)),
    da=st.sets(st.integers(1, 3), min_size=1),
    db=st.sets(st.integers(1, 3), min_size=1),
    pseed=st.integers(0, 5),
)
def test_disjointness_proofs_are_sound(a, b, da, db, pseed):
    a, b = (min(a), max(a) + (a[0] == a[1])), (min(b), max(b) + (b[0] == b[1]))
    a, b = (a[0], min(a[1], 1000)), (b[0], min(b[1], 1000))
    try:
        sa = Support(depths=tuple(da), buckets=a, partition_seed=pseed, **SMALL)
        sb = Support(depths=tuple(db), buckets=b, partition_seed=pseed, **SMALL)
    except ValueError:
        return  # an empty slice of a small universe
    ok, _ = compositions_disjoint(sa, sb)
    shared = set(sa.enumerate()) & set(sb.enumerate())
    assert ok == (not shared)  # small universes are decided exactly


def test_unprovable_overlap_is_reported_not_assumed():
    train = Support(depths=(3,))
    evals = Support(depths=(3,), input_buckets=(0, 500))
    ok, why = items_disjoint(train, evals)
    assert not ok and "could not prove" in why
    split = Split("leaky", train={"sft": train}, eval={"test": evals})
    with pytest.raises(LeakageError, match="eval 'test' and train 'sft' may share items"):
        split.check_disjoint()
    with pytest.raises(ValueError, match="unseen='nope' is not an eval support"):
        Split("x", train={"sft": train}, eval={"test": evals}, unseen=("nope",))


def test_explicit_lists_are_checked_exactly():
    comps = Support(depths=(2,), **SMALL).enumerate()
    a = Support(depths=(2,), compositions=comps[:50], **SMALL)
    b = Support(depths=(2,), compositions=comps[50:], **SMALL)
    c = Support(depths=(2,), compositions=comps[40:60], **SMALL)
    assert compositions_disjoint(a, b)[0]
    ok, why = compositions_disjoint(a, c)
    assert not ok and "10 shared" in why
    assert inputs_disjoint(Support(input_len=(2, 3)), Support(input_len=(4, 6)))[0]


def test_json_round_trip(tmp_path):
    split = hlsm.heldout_split(("riffle",), depth=2)
    split.save(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json")
    assert again == split
    assert again.check_disjoint() == split.check_disjoint()
    sup = Support(depths=(2,), compositions=[(("chain", "reverse"), ("skip", "evens"))], exclude=[], **SMALL)
    assert Support.from_dict(sup.to_dict()) == sup
    with pytest.raises(ValueError, match="unknown Support fields"):
        Support.from_dict({"depth": 3})
    # compositions alone mean exactly those compositions, at whatever depths they have
    comps = [[["chain", "reverse"]], [["chain", "reverse"], ["skip", "evens"]]]
    only = Support.from_dict({"compositions": comps})
    assert only.depths == (1, 2) and len(only.enumerate()) == 2


def test_sample_compositions_stops_on_a_small_support():
    sup = Support(depths=(1,), skills=("reverse", "evens"), routings=("chain",))
    assert sorted(sup.sample_compositions(1000)) == [(("chain", "evens"),), (("chain", "reverse"),)]


def test_restrict_and_sample_compositions_are_deterministic():
    sup = hlsm.compositional_split(depth=3).train["sft"]
    small = sup.restrict(40, seed=1)
    assert len(small.compositions) == 40 and small.compositions == sup.restrict(40, seed=1).compositions
    assert all(sup.contains(c) for c in small.compositions)
    assert {ex.composition for ex in HLSM(support=small, seed=0).sample(2000)} == set(small.compositions)


def test_heldout_split_within_an_inventory():
    skills = ("reverse", "rotate_left", "swap_pairs", "atbash")
    split = hlsm.heldout_split(("atbash",), depth=2, skills=skills, routings=("chain",))
    sft = split.support("sft").enumerate()
    assert len(sft) == 9 and all("atbash" not in (s for _, s in c) for c in sft)  # 3 kept skills squared
    atoms = split.support("heldout_atoms").enumerate()
    assert atoms == split.support("rl_atoms").enumerate() == [(("chain", "atbash"),)]
    for name in ("unseen", "rl_prompts"):
        comps = split.support(name).enumerate()
        assert comps and all(any(s == "atbash" for _, s in c) for c in comps)
        assert all(s in skills for c in comps for _, s in c)
    assert not set(split.support("unseen").enumerate()) & set(split.support("rl_composed").enumerate())
    assert len(split.support("unseen").enumerate()) + len(split.support("rl_composed").enumerate()) == 16 - 9
    routed = hlsm.heldout_split(("twice",), depth=2, skills=skills[:2], routings=("chain", "twice"))
    assert all(r == "chain" for c in routed.support("sft").enumerate() for r, _ in c)
    assert {c[0][0] for c in routed.support("heldout_atoms").enumerate()} == {"twice"}
    with pytest.raises(ValueError, match="not in the inventory"):
        hlsm.heldout_split(("riffle",), skills=skills)
    with pytest.raises(ValueError, match="leaves no module"):
        hlsm.heldout_split(("chain",), routings=("chain",))


def test_heldout_split_sft_coverage_depths_deeper_and_shallow_reintroduction():
    skills = ("reverse", "rotate_left", "swap_pairs", "atbash")
    kw = dict(depth=3, skills=skills, routings=("chain", "twice"), rl=(0, 300), test=(300, 1000))
    full = hlsm.heldout_split(("twice",), **kw)
    split = hlsm.heldout_split(("twice",), sft=(0, 100), sft_depths=(1, 2, 3), deeper=(4,), shallow=2, **kw)
    sft = split.support("sft").enumerate()
    assert {len(c) for c in sft} == {1, 2, 3} and all(r == "chain" for c in sft for r, _ in c)
    at3 = [c for c in sft if len(c) == 3]
    assert 0 < len(at3) < len(full.support("sft").enumerate()) and set(at3) <= set(full.support("sft").enumerate())
    assert set(split.support("seen").enumerate()) == set(at3)  # seen: SFT's compositions at L_train
    shallow = split.support("rl_shallow").enumerate()
    assert shallow and all(len(c) == 2 and any(r == "twice" for r, _ in c) for c in shallow)
    deeper = split.support("deeper")
    assert deeper.depths == (4,) and deeper.require == ("twice",) and "deeper" in split.unseen
    assert len(split.check_disjoint()) == len(split.eval) * len(split.train)  # a proof per pair, or it raises
    for bad, match in ((dict(sft_depths=(1, 2)), "sft_depths"), (dict(deeper=(3,)), "deeper"),
                       (dict(shallow=3), "shallow"), (dict(sft=(0, 2000)), "sft")):
        with pytest.raises(ValueError, match=match):
            hlsm.heldout_split(("twice",), **dict(kw, **bad))


def test_make_split_builds_from_specs_and_names_the_field_on_bad_ones():
    from hlsm.support import make_split

    spec = {"factory": "compositional", "depth": 2, "skills": ["reverse", "atbash", "shift_up"], "routings": ["chain"],
            "deeper": []}
    split = make_split(spec)
    assert make_split(split) is split and make_split(split.to_dict()).to_dict() == split.to_dict()
    with pytest.raises(ValueError, match=r"GRPOConfig.split: unknown factory 'nope'"):
        make_split({"factory": "nope"}, "GRPOConfig.split")
    with pytest.raises(ValueError, match=r"split: bad arguments for compositional"):
        make_split({"factory": "compositional", "colour": 3})
    with pytest.raises(ValueError, match=r"split must be a Split or a dict, got list"):
        make_split([1])


# --- issue 15 regressions: a name is one support; evaluators read what is proven held out ----------


def test_no_name_may_be_both_a_training_and_an_evaluation_support():
    sup = Support(depths=(1,), input_buckets=hlsm.support.TRAIN_INPUTS)
    with pytest.raises(ValueError, match=r"\['atoms'\] name both a training and an evaluation support"):
        Split("s", train={"atoms": sup}, eval={"atoms": Support(depths=(1,))})
    for split in (hlsm.compositional_split(), hlsm.heldout_split(("sort_asc",))):
        assert not set(split.train) & set(split.eval)


def test_evaluated_atoms_share_no_item_with_the_sft_atoms_stream():
    """On main before the fix, 95 of the first 256 'eval atoms' items were SFT training items."""
    from hlsm.evaluate import eval_items
    from hlsm.names import ATOMS, EVAL_ATOMS, train_stream
    from hlsm.support import DEFAULT_SPLIT, make_split

    split = make_split(DEFAULT_SPLIT)
    evaluated = {(ex.x, ex.composition) for ex in eval_items(split, EVAL_ATOMS, 256)}
    trained = HLSM(support=split.train[ATOMS], seed=0, stream=train_stream(ATOMS)).sample(20_000)
    assert not evaluated & {(ex.x, ex.composition) for ex in trained}
    assert split.support(EVAL_ATOMS) is split.eval[EVAL_ATOMS]  # the support check_disjoint proves
    split.check_disjoint()


@pytest.mark.parametrize("kw", [dict(sft=(0, 600), rl=(500, 750)), dict(rl=(700, 800)), dict(heldout=(0, 10))])
def test_compositional_split_ranges_must_be_disjoint(kw):
    with pytest.raises(ValueError, match="overlap"):
        hlsm.compositional_split(**kw)
    with pytest.raises(ValueError, match="overlap"):
        hlsm.heldout_split(("sort_asc",), rl=(0, 600), test=(500, 1000))


def test_validation_compositions_are_apart_from_training_and_from_unseen():
    """Hyperparameters chosen on ``validation`` are never chosen on a test (``unseen``) composition."""
    with pytest.raises(ValueError, match="validation=.*overlap"):
        hlsm.compositional_split(validation=(700, 800))
    s = hlsm.compositional_split(depth=2, heldout=(850, 1000), validation=(750, 850), skills=SMALL["skills"])
    assert "validation" in s.unseen and "validation" not in hlsm.compositional_split(depth=2).eval
    val = {comp for _, comp in sample_items(s.eval["validation"], 400)}
    test = {comp for _, comp in sample_items(s.eval["unseen"], 400)}
    assert val and test and not val & test
    assert not any(t.contains(c) for t in s.train.values() for c in val)


def test_cli_refuses_overlapping_ranges(tmp_path, capsys):
    from hlsm.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["split", "compositional", "--sft", "0", "600", "--rl", "500", "750", "--out", str(tmp_path / "s.json")])
    assert e.value.code == 2 and "overlap" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_heldout_split_refuses_a_bare_string():
    with pytest.raises(ValueError, match=r"the string 'sort_asc'; write \('sort_asc',\)"):
        hlsm.heldout_split("sort_asc")


def test_sft_may_show_shallower_compounds_and_stays_proven_disjoint():
    split = hlsm.compositional_split(depth=3, sft_depths=(1, 2, 3), skills=SMALL["skills"], routings=("chain", "skip"))
    assert split.train["sft"].depths == (1, 2, 3) and split.eval["unseen"].depths == (3,)
    split.check_disjoint()
    assert {ex.depth for ex in HLSM(support=split.train["sft"], seed=0).sample(300)} == {1, 2, 3}
    with pytest.raises(ValueError, match="sft_depths must include depth=3"):
        hlsm.compositional_split(depth=3, sft_depths=(1, 2))


def test_sft_missing_drops_the_named_skills_from_sft_and_splits_unseen_by_them():
    missing = ("reverse", "shift_up")
    base = hlsm.compositional_split(depth=3, sft_depths=(1, 2, 3), **SMALL)
    split = hlsm.compositional_split(depth=3, sft_depths=(1, 2, 3), sft_missing=missing, **SMALL)
    # every other support is unchanged, so runs on either split are scored on the same items
    assert all(split.train[n] == base.train[n] for n in base.train)
    assert all(split.eval[n] == base.eval[n] for n in base.eval)
    uses = lambda comp: any(s in missing for _, s in comp)
    sft = sample_items(split.train["sft_missing"], 400)
    assert not any(uses(c) for _, c in sft) and {len(c) for _, c in sft} == {1, 2, 3}
    assert all(base.train["sft"].contains_item(x, c) for x, c in sft)  # a subset of the full SFT support
    for x, c in sample_items(base.eval["unseen"], 400):  # unseen = using a missing skill + using none
        assert split.eval["unseen_missing"].contains_item(x, c) == uses(c)
        assert split.eval["unseen_covered"].contains_item(x, c) == (not uses(c))
    assert set(split.unseen) == {"unseen", "unseen_missing", "unseen_covered"}
    with pytest.raises(ValueError, match="unknown module 'sorted'"):
        hlsm.compositional_split(sft_missing=("sorted",))
    with pytest.raises(ValueError, match="tuple of module names"):
        hlsm.compositional_split(sft_missing="reverse")
    with pytest.raises(ValueError, match="leaves no module"):
        hlsm.compositional_split(sft_missing=SMALL["skills"], **SMALL)


@pytest.mark.parametrize("together", [True, False])
def test_planted_split_hides_or_shows_the_pair_apart_at_the_same_size(together):
    from hlsm.identify import identify

    split = hlsm.planted_split(together=together)
    a, b = "rotate_left", "reverse"
    sft = split.train["sft"].compositions
    assert len(sft) == 4 + 16 + 64 + 9  # the others' atoms, L = 2 and L = 3 chains, and 1 + 2k with the pair
    uses = lambda comp, m: any(s == m for _, s in comp)
    alone = [c for c in sft if uses(c, a) != uses(c, b)]
    assert (alone == []) == together  # together: a and b only ever side by side
    if together:
        assert all(any(c[i][1] == a and c[i + 1][1] == b for i in range(len(c) - 1)) for c in sft if uses(c, a))
    ident = identify(list(sft))
    assert ident.units[a].identified == ident.units[b].identified == (not together)
    assert all(ident.units[m].identified for m in ("swap_pairs", "shift_up", "atbash", "swap_halves"))
    separate = split.eval["separate"].compositions
    assert len(separate) == 16 and not set(separate) & set(sft)
    assert all(uses(c, a) != uses(c, b) and len(c) == 2 for c in separate)
    assert split.eval["swapped"].compositions == ((("chain", b), ("chain", a)),)
    assert len(split.check_disjoint()) == 3
    with pytest.raises(ValueError, match="two distinct pair skills"):
        hlsm.planted_split(pair=("reverse", "reverse"))


def test_restrict_eval_lists_n_compositions_of_each_named_eval_support_only():
    s = hlsm.compositional_split(depth=3)
    r = s.restrict_eval(("unseen",), 5, seed=1)
    assert len(r.eval["unseen"].compositions) == 5
    assert all(s.eval["unseen"].contains(c) for c in r.eval["unseen"].compositions)
    assert r.eval["seen"] == s.eval["seen"] and r.train == s.train
    assert r.eval["unseen"] == s.restrict_eval(("unseen",), 5, seed=1).eval["unseen"]  # deterministic
    assert Split.from_dict(r.to_dict()).eval["unseen"] == r.eval["unseen"]
    with pytest.raises(ValueError, match="'sft' is not an eval support"):
        s.restrict_eval(("sft",), 5)
