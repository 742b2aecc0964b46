"""The local criterion (Theorem 3.4) and the RL-enrichment check: hand-worked cases, properties, CLI."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlsm.identify import (
    INPUT,
    enrichment,
    identify,
    local_interface,
    local_interfaces,
    local_reach,
    local_support,
    main,
    p0_of,
    show_interface,
)

A, B, C, D = "reverse", "sort_asc", "shift_up", "evens"


def comp(*steps):
    """comp("chain:reverse", "skip:evens") -> (("chain", "reverse"), ("skip", "evens"))."""
    return tuple(tuple(s.split(":")) for s in steps)


def chain(*skills):
    return tuple(("chain", s) for s in skills)


# --- local interfaces -------------------------------------------------------------------------


def test_local_interfaces_read_the_operands_and_mark_the_input():
    c = comp("chain:reverse", "reuse_input:evens", "concat:sort_asc", "interleave:shift_up")
    assert local_interface(c, 1) == (("chain", A), (INPUT,))
    assert local_interface(c, 2) == (("reuse_input", D), (INPUT,))  # reads h_0 whatever t is
    assert local_interface(c, 3) == (("concat", B), (("chain", A), ("reuse_input", D)))  # ordered h_1, h_2
    assert local_interface(c, 4) == (("interleave", C), (INPUT, ("concat", B)))
    assert local_interface(comp("concat:reverse"), 1) == (("concat", A), (INPUT, INPUT))  # repeats kept
    assert local_interface(comp("chain:reverse", "skip:evens"), 2) == (("skip", D), (INPUT,))  # h_{t-2} = h_0
    assert show_interface(local_interface(c, 4)) == "interleave:shift_up(INPUT, concat:sort_asc)"
    assert len(local_interfaces(c)) == 4
    with pytest.raises(ValueError, match="step t=5"):
        local_interface(c, 5)


# --- the local criterion, hand-worked ---------------------------------------------------------

# skip:reverse reads h_0 at t = 2 and chain:sort_asc reads it at t = 3: the target shows both at t = 1, 2
SHIFTED = [comp("chain:shift_up", "skip:reverse", "chain:sort_asc"), comp("chain:shift_up"),
           comp("reuse_input:reverse"), comp("reuse_input:sort_asc"), comp("reuse_input:shift_up")]
SHIFTED_TARGET = comp("skip:reverse", "chain:sort_asc")


def test_interfaces_witnessed_only_at_other_steps_are_tied_but_not_positional_reachable():
    tied = local_support(SHIFTED).reach(SHIFTED_TARGET)
    assert tied.reachable and not tied.seen and tied.missing == () and tied.unidentified == ()
    assert [(r.step, r.example_step, r.witnesses) for r in tied.interfaces] == [(1, 2, 1), (2, 3, 1)]
    assert tied.score == 1.0 and tied.min_witnesses == 1 and tied.why.startswith("locally reachable")
    assert identify(SHIFTED).reach(SHIFTED_TARGET).reachable  # the coverage criterion agrees here

    pos = local_support(SHIFTED, positional=True, max_depth=3).reach(SHIFTED_TARGET)
    assert not pos.reachable and pos.score == 0.0 and pos.min_witnesses == 0
    assert pos.missing == ((1, (("skip", A), (INPUT,))), (2, (("chain", B), (("skip", A),))))
    assert [r.steps for r in pos.interfaces] == [(2,), (3,)]
    assert "step 1 skip:reverse(INPUT) (shown at step 2 only)" in pos.why
    assert "step 2 chain:sort_asc(skip:reverse) (shown at step 3 only)" in pos.why


def test_one_unwitnessed_interface_is_named_with_its_step():
    support = [chain(A, B), chain(B, C), chain(C), chain(A)]
    lw = local_support(support)
    assert lw.reach(chain(A, B, C)).reachable  # every parent-children pair shown somewhere
    r = lw.reach(chain(A, C))
    assert not r.reachable and r.unidentified == ()
    assert r.missing == ((2, (("chain", C), (("chain", A),))),)
    assert "no local witness for step 2 chain:shift_up(chain:reverse); score 1/2" in r.why
    assert (r.score, r.min_witnesses) == (0.5, 0)
    assert [x.witnesses for x in r.interfaces] == [2, 0]  # chain:reverse(INPUT) in A>B and the atom A


def test_a_composition_in_the_support_is_reachable_even_unidentified():
    r = local_support([chain(A, B)]).reach(chain(A, B))
    assert r.reachable and r.seen and r.why.startswith("seen")
    assert set(r.unidentified) == {A, B}  # reported, though seen
    unseen = local_support([chain(A, B)]).reach(chain(A, B, B))
    assert not unseen.reachable and "not identified: reverse, sort_asc" in unseen.why


def test_local_reach_accepts_supports_and_targets_like_reach():
    out = local_reach([chain(A, B), chain(B, A), chain(A), chain(B)], [chain(A, B, A), chain(B, B)])
    assert [r.reachable for r in out] == [True, False]


# --- properties -------------------------------------------------------------------------------

SMALL_STEPS = [(r, s) for r in ("chain", "skip", "concat", "reuse_input") for s in (A, B, C)]
compositions = st.lists(st.sampled_from(SMALL_STEPS), min_size=1, max_size=3).map(tuple)


@settings(max_examples=30, deadline=None)
@given(st.lists(compositions, min_size=1, max_size=8), st.lists(compositions, min_size=1, max_size=4),
       st.lists(compositions, min_size=1, max_size=6), st.booleans())
def test_more_support_never_unreaches_and_the_support_reaches_itself(base, extra, targets, positional):
    kw = dict(positional=positional, max_depth=3)
    before, after = local_support(base, **kw), local_support(base + extra, **kw)
    coverage = identify(base, **kw)
    for c in targets:
        r = before.reach(c)
        if r.reachable:
            assert after.reach(c).reachable  # witnesses and identification only grow
            assert coverage.reach(c).reachable  # a local witness covers the step's module interfaces
        assert after.reach(c).score >= r.score
    for c in base:
        r = before.reach(c)
        assert r.reachable and r.seen and r.score == 1.0 and r.min_witnesses >= 1


# --- RL enrichment ----------------------------------------------------------------------------

SFT = [chain(A, B), chain(B, A), chain(A), chain(B), chain(C)]
TARGET = chain(A, C)  # needs chain:shift_up(chain:reverse), which no SFT composition shows
RL_X = chain(A, C, B)  # ... and this RL composition does (at step 2)


@pytest.mark.parametrize("p0,status,reachable", [(0.0, "unreached", False), (1.0, "saturated", False),
                                                 (0.3, "enrichable", True)])
def test_an_rl_only_interface_is_enrichable_only_inside_the_band(p0, status, reachable):
    (e,) = enrichment(SFT, [RL_X], {RL_X: p0}, [TARGET])
    assert not e.sft_reachable and e.reachable is reachable
    assert [r.status for r in e.interfaces] == ["sft", status]
    row = e.interfaces[1]
    assert (row.via, row.p0, row.rl_witnesses) == (RL_X, p0, 1)
    assert e.reachable_with_saturated is (p0 > 0)  # a solved RL composition already shows it
    if reachable:
        assert "enrichable via RL [chain:reverse > chain:shift_up > chain:sort_asc] with p0 = 0.3" in e.why
    else:
        assert f"not enrichable: p0 = {p0:g} in RL" in e.why


def test_enrichment_reasons_for_sft_no_witness_band_and_unmeasured():
    other = chain(B, C)  # shows chain:shift_up(chain:sort_asc), not the target's interface
    out = enrichment(SFT, [RL_X, other], {other: 0.5}, [TARGET, chain(A, B, A), chain(C, A)])
    target, inside, nowhere = out
    assert target.interfaces[1].status == "unmeasured" and not target.reachable
    assert inside.sft_reachable and inside.reachable and "RL is not needed" in inside.why
    assert nowhere.interfaces[1].status == "no witness" and "no witness in SFT or RL" in nowhere.why
    (narrow,) = enrichment(SFT, None, {RL_X: 0.3}, [TARGET], band=(0.5, 1))
    assert narrow.interfaces[1].status == "unreached" and not narrow.reachable
    assert "<= lo = 0.5" in narrow.why
    (direct,) = enrichment(SFT, None, {TARGET: 0.4}, [TARGET])  # RL trains on the target itself
    assert direct.seen and direct.reachable


def test_rl_compositions_identify_units_only_when_active():
    sft = [chain(A, B), chain(B, A), chain(A), chain(B)]  # shift_up never appears in SFT
    rl = chain(A, C)
    for p0, ok in ((0.0, False), (0.5, True)):
        (e,) = enrichment(sft, None, {rl: p0, chain(C): p0}, [chain(A, C, A)])
        assert (C in e.unidentified) is not ok
        assert [r.status for r in e.interfaces][:2] == ["sft", "enrichable" if ok else "unreached"]


def test_p0_inputs_are_validated_naming_the_value():
    assert p0_of({"chain:reverse > skip:sort_asc": 0.3, "chain.evens+chain.reverse": 1}) == {
        comp("chain:reverse", "skip:sort_asc"): 0.3, chain(D, A): 1.0}
    assert p0_of([[[["chain", A]], 0.5], {"composition": "chain:sort_asc", "p0": 0}]) == {
        chain(A): 0.5, chain(B): 0.0}
    for bad, match in [({"chain:reverse": 1.5}, "1.5"), ({"chain:reverse": True}, "True"),
                       ({"chain:nonesuch": 0.1}, "nonesuch"), ([["chain:reverse"]], "entry"),
                       ("p", "expected a dict"), ({}, "no compositions")]:
        with pytest.raises(ValueError, match=match):
            p0_of(bad)
    with pytest.raises(ValueError, match="outside the RL support"):
        enrichment(SFT, [RL_X], {TARGET: 0.5}, [TARGET])
    with pytest.raises(ValueError, match="band"):
        enrichment(SFT, None, {RL_X: 0.5}, [TARGET], band=(0.6, 0.4))


# --- CLI --------------------------------------------------------------------------------------


def _files(tmp_path, p0):
    support, targets, p0_path = tmp_path / "sft.json", tmp_path / "targets.json", tmp_path / "p0.json"
    support.write_text(json.dumps(SFT))
    targets.write_text(json.dumps([TARGET, chain(A, B, A)]))
    p0_path.write_text(p0 if isinstance(p0, str) else json.dumps(p0))
    return [str(support), "--targets", str(targets), "--p0", str(p0_path)]


def test_cli_local_criterion_and_enrichment(tmp_path, capsys):
    argv = _files(tmp_path, {"chain:reverse > chain:shift_up > chain:sort_asc": 0.3})
    assert main([*argv, "--criterion", "local"]) == 0
    text = capsys.readouterr().out
    assert "== targets, local criterion" in text and "locally reachable 1 / 2" in text
    assert "no local witness for step 2 chain:shift_up(chain:reverse)" in text
    assert "== targets\n" not in text  # --criterion local replaces the coverage section
    assert "predicted reachable after RL 2 / 2" in text
    assert main([*argv, "--criterion", "both", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["reachable"] for t in data["local"]] == [False, True]
    assert data["local"][0]["missing"] == [[2, [["chain", C], [["chain", A]]]]]
    assert data["targets"] is not None and data["enrichment"][0]["interfaces"][1]["status"] == "enrichable"


@pytest.mark.parametrize("p0,extra,message", [
    ("{not json", (), "not valid JSON"),
    ({"chain:reverse": 1.5}, (), "must be a number in [0, 1], got 1.5"),
    ({"chain:nonesuch": 0.5}, (), "unknown skill 'nonesuch'"),
    ({"chain:reverse": 0.5}, ("--band", "0.9", "0.1"), "--band: band must satisfy 0 <= lo < hi <= 1, got (0.9, 0.1)"),
    ({"chain:reverse": 0.5}, ("--rl", "rl"), "--rl rl: neither supports of the split nor one JSON file"),
])
def test_cli_bad_p0_input_is_one_line_naming_it(tmp_path, capsys, p0, extra, message):
    with pytest.raises(SystemExit) as exc:
        main([*_files(tmp_path, p0), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("python -m hlsm.identify: error: --")
    with pytest.raises(SystemExit):
        main([*_files(tmp_path, {"chain:reverse": 0.5})[:-2], "--p0", str(tmp_path / "missing.json")])
    assert "cannot read it" in capsys.readouterr().err
