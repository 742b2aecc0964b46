"""Identification checker: hand-worked supports, exact certificates, graph criteria, algebra, CLI."""

import json
from collections import Counter
from fractions import Fraction

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import hlsm
from hlsm.identify import algebra as ident_mod  # PRIME, patched where _solve reads it
from hlsm.identify import compare, identify, interfaces_of, main, reach, repair

A, B, C, D = "reverse", "sort_asc", "shift_up", "evens"


def comp(*steps):
    """comp("chain:reverse", "skip:evens") -> (("chain", "reverse"), ("skip", "evens"))."""
    return tuple(tuple(s.split(":")) for s in steps)


def chain(*skills):
    return tuple(("chain", s) for s in skills)


def counts(c, kind, positional=False):
    """The incidence row of a composition, recomputed here independently of hlsm.identify."""
    k = 0 if kind == "routing" else 1
    return Counter(step[k] if not positional else f"{step[k]}@{t}" for t, step in enumerate(c, 1))


def check_certificates(ident):
    """y . A == e_unit for identified units, A v == 0 with v[unit] != 0 otherwise (exact)."""
    for r in ident.units.values():
        if r.identified:
            total = Counter()
            for c, y in r.certificate:
                assert isinstance(y, Fraction) and c in ident.compositions
                for u, n in counts(c, r.kind, ident.positional).items():
                    total[u] += y * n
            assert {u: x for u, x in total.items() if x} == {r.unit: 1}
        else:
            v = dict(r.confounder)
            assert v[r.unit] > 0
            for c in ident.compositions:
                assert sum(v.get(u, 0) * n for u, n in counts(c, r.kind, ident.positional).items()) == 0


def naive_identified(comps, positional=False):
    """The textbook test, all in sympy: unit j identified iff deleting column j lowers the rank."""
    out = set()
    for kind in ("routing", "skill"):
        rows = [counts(c, kind, positional) for c in comps]
        units = sorted({u for r in rows for u in r})
        M = sympy.Matrix([[r[u] for u in units] for r in rows])
        rank = M.rank()
        out |= {u for j, u in enumerate(units) if rank - _without(M, j).rank() == 1}
    return out


def _without(M, j):
    M = M.copy()
    M.col_del(j)
    return M


# --- hand-worked supports ---------------------------------------------------------------------


def test_module_only_seen_together_with_another_is_not_identifiable():
    base = [chain(A, B), chain(C, C)]  # reverse and sort_asc always appear together
    ident = identify(base)
    assert not ident.units[A].identified and not ident.units[B].identified
    assert ident.units[C].identified and ident.units["chain"].identified
    assert (A, B) in ident.twins
    assert dict(ident.units[A].confounder) == {A: 1, B: -1}  # shift A up, B down: nothing changes
    assert set(ident.unidentified) == {A, B}
    check_certificates(ident)

    separated = identify(base + [chain(A, C)])  # one composition with A but without B
    assert separated.units[A].identified and separated.units[B].identified
    assert separated.twins == ()
    # e_A = (A + C) - 1/2 (C + C): the witness is exactly those two compositions
    assert dict(separated.units[A].certificate) == {chain(A, C): 1, chain(C, C): Fraction(-1, 2)}
    check_certificates(separated)


def test_three_pairs_identify_each_member_with_halves():
    ident = identify([chain(A, B), chain(B, C), chain(A, C)])
    assert {A, B, C} <= set(ident.identified)
    half = Fraction(1, 2)
    assert sorted(y for _, y in ident.units[A].certificate) == [-half, half, half]
    check_certificates(ident)


def test_atoms_are_identified_but_their_interfaces_are_not_covered():
    atoms = [comp("chain:reverse"), comp("skip:sort_asc"), comp("chain:shift_up")]
    ident = identify(atoms)
    assert {A, B, C, "chain", "skip"} <= set(ident.identified)
    assert ident.interfaces == {} and ident.possible_interfaces == 0
    assert all(ident.modules[m].atom_only for m in (A, B, C, "chain", "skip"))
    check_certificates(ident)

    target = comp("chain:reverse", "chain:sort_asc")
    r = ident.reach(target)
    assert not r.reachable and not r.seen and r.unidentified == ()
    assert set(r.uncovered) == {("chain", "chain"), ("chain", B), (A, "chain"), (A, B)}
    assert "interfaces not covered" in r.why

    composed = identify(atoms + [chain(A, B), chain(B, A)])  # A and B now meet in compositions
    assert composed.reach(chain(A, B, A)).reachable  # unseen, every unit and interface covered
    assert not composed.reach(chain(A, C)).reachable  # shift_up still only an atom
    assert composed.modules[C].isolated and not composed.modules[A].isolated


def test_interface_keys_follow_the_data_edges_of_the_selection_dag():
    c = comp("chain:reverse", "reuse_input:evens", "concat:sort_asc")  # step 2 reads h_0 only
    assert interfaces_of(c, "skill-skill") == {(A, B), (D, B)}
    assert interfaces_of(c, "skill-routing") == {(A, "concat"), (D, "concat")}
    assert len(interfaces_of(c, "module")) == 8
    assert interfaces_of(comp("concat:reverse"), "module") == set()  # concat at t = 1 reads h_0 twice


def test_absent_and_positional_units():
    ident = identify([comp("chain:reverse"), chain(B, C)])
    r = ident.reach(chain(D))
    assert not r.reachable and r.absent == (D,)
    pos = identify([comp("chain:reverse"), comp("chain:sort_asc")], positional=True, max_depth=2)
    assert pos.units["reverse@1"].identified and not pos.units["reverse@2"].identified
    assert pos.reach(chain(B, A)).unidentified == ("chain@2", "reverse@2")
    check_certificates(pos)


def test_positional_units_at_one_depth_have_a_gauge_between_positions():
    comps = hlsm.Support(depths=(2,), skills=(A, B, C), routings=("chain", "skip")).enumerate()
    tied, pos = identify(comps), identify(comps, positional=True)
    assert len(tied.identified) == 5
    assert pos.identified == ()  # (theta@1 + k, theta@2 - k) fits every composition equally well
    v = dict(pos.units["reverse@1"].confounder)
    assert {u.split("@")[1] for u in v} == {"1", "2"}
    check_certificates(pos)
    # adding atoms breaks the gauge
    assert set(identify(comps + [comp("chain:reverse")], positional=True).identified) >= {"reverse@1"}


def test_exactness_does_not_depend_on_the_prime(monkeypatch):
    # mod 2 the rows A+B, B+C, A+C have rank 2; over QQ rank 3: the exact loop must recover it
    comps = [chain(A, B), chain(B, C), chain(A, C), chain(C, D, D)]
    expected = identify(comps)
    monkeypatch.setattr(ident_mod, "PRIME", 2)
    low = identify(comps)
    assert low.identified == expected.identified and low.rank == expected.rank
    assert {A, B, C, D} <= set(low.identified)
    check_certificates(low)


# --- properties against an independent oracle -------------------------------------------------

SMALL_STEPS = [(r, s) for r in ("chain", "skip", "concat") for s in (A, B, C, D)]
compositions = st.lists(st.sampled_from(SMALL_STEPS), min_size=1, max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(st.lists(compositions, min_size=1, max_size=8), st.lists(compositions, min_size=1, max_size=4),
       st.booleans())
def test_identification_matches_naive_sympy_and_only_grows(base, extra, positional):
    before = identify(base, positional=positional)
    assert set(before.identified) == naive_identified(set(base), positional)
    check_certificates(before)
    after = identify(base + extra, positional=positional, max_depth=before.depths[-1])
    assert set(before.identified) <= set(after.identified)  # more data never un-identifies
    assert before.interfaces.keys() <= after.interfaces.keys()
    for c in extra:
        assert after.reach(c).reachable  # seen now
    for c in base:
        assert before.reach(c).seen and before.reach(c).reachable


def test_full_inventory_support_is_checked_exactly_and_consistently():
    comps = hlsm.Support(depths=(3,)).sample_compositions(1500, seed=1)
    ident = identify(comps)
    assert ident.rank == {"routing": 10, "skill": 24} and len(ident.identified) == 34
    check_certificates(ident)
    m, labels = ident.matrix("skill", basis_only=True)
    assert m.rank() == 24 and len(labels) == 24
    assert ident.interface_graph().number_of_edges() == len(ident.interfaces)
    assert ident.bipartite().number_of_edges() >= len(comps)


# --- support algebra --------------------------------------------------------------------------


def test_compare_rl_inside_vs_beyond_sft():
    sft = [chain(A, B), chain(B, A), chain(B, B)]
    rl = [chain(A, B), chain(C, A)]  # one inside, one beyond (brings shift_up)
    targets = [chain(C, B), chain(A, B, A), chain(C, A, B)]
    cmp = compare(sft, rl, targets)
    assert (cmp.rl_inside, cmp.rl_beyond, cmp.new_modules) == (1, 1, (C,))
    assert C in cmp.gained and A in cmp.identified_sft
    assert (C, A) in cmp.new_interfaces
    # A>B>A: reachable from SFT; C>A>B: only once RL shows C->A; C>B: nobody shows C->B
    assert (cmp.n_targets, cmp.reachable_sft, cmp.reachable_union) == (3, 1, 2)
    split = hlsm.compositional_split(depth=2)
    inside = compare(split.train["sft"], split.train["rl_inside"], n=200)
    assert inside.rl_beyond == 0 and inside.support_inside is True


def test_repair_greedy_and_exact_make_the_target_reachable():
    base = [comp("chain:reverse"), comp("chain:sort_asc"), comp("chain:shift_up")]
    target = chain(A, B, C)
    pool = [chain(A, B), chain(B, C), chain(C, A), chain(D, D), chain(A, A, B, C)]
    greedy = repair(base, target, pool)
    exact = repair(base, target, pool, exact=True, max_add=3)
    assert greedy.found and greedy.after.reachable and not greedy.before.reachable
    assert exact.found and exact.method == "exact"
    assert exact.added == (chain(A, A, B, C),)  # one row shows both interfaces A->B and B->C
    assert len(greedy.added) >= len(exact.added)
    exact = repair(base, target, pool[:-1], exact=True, max_add=3)
    assert set(exact.added) == {chain(A, B), chain(B, C)}  # now the minimum takes two
    assert identify(base + list(exact.added)).reach(target).reachable
    assert repair(base, target, [chain(D, D)]).found is False
    assert repair(base + [target], target, pool).added == ()  # already reachable (seen)


def test_repair_needs_pairs_when_no_single_row_helps():
    # B and C only appear together; A+B alone or A alone leaves C confounded, both together isolate it
    base = [chain(B, C)]
    pool = [chain(A, B), chain(A), chain(D, D)]
    fix = repair(base, comp("chain:shift_up"), pool, exact=True, max_add=2)
    assert fix.found and set(fix.added) == {chain(A, B), chain(A)}
    assert not any(repair(base, comp("chain:shift_up"), [c], exact=True).found for c in pool)
    g = repair(base, comp("chain:shift_up"), pool)
    assert g.found and len(g.added) >= 2


# --- input handling and CLI -------------------------------------------------------------------


def test_bad_input_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="nonesuch"):
        identify([comp("chain:nonesuch")])
    with pytest.raises(ValueError, match="empty support"):
        identify([])
    with pytest.raises(ValueError, match="interface 'wires'"):
        identify([chain(A)], interface="wires")
    with pytest.raises(ValueError, match="kind 'skills'"):
        identify([chain(A)]).matrix("skills")
    with pytest.raises(ValueError, match="limit"):
        repair([chain(A)], chain(B, C), hlsm.Support(depths=(2,)).sample_compositions(300), exact=True)


def test_cli_round_trips_json(tmp_path, capsys):
    support = tmp_path / "support.json"
    support.write_text(json.dumps([chain(A, B), chain(C, C)]))
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([chain(A, C), chain(C, C, C)]))
    out = tmp_path / "out.json"
    assert main([str(support), "--targets", str(targets), "--json", str(out), "--witness", A, C]) == 0
    text = capsys.readouterr().out
    assert "NOT identified: reverse, sort_asc" in text and "+1*reverse -1*sort_asc" in text
    data = json.loads(out.read_text())
    units = data["identification"]["units"]
    assert units[A]["identified"] is False and units[C]["identified"] is True
    assert units[C]["certificate"] == [[[["chain", C], ["chain", C]], "1/2"]]
    reached = {tuple(map(tuple, t["composition"])): t["reachable"] for t in data["targets"]}
    assert reached == {chain(A, C): False, chain(C, C, C): True}

    assert main([str(support), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["identification"]["rank"] == {"routing": 1, "skill": 2}


def test_cli_on_a_split_selects_supports_by_name(tmp_path, capsys):
    path = tmp_path / "split.json"
    hlsm.heldout_split((B,), depth=2).save(path)
    argv = [str(path), "--n", "150", "--target", "unseen", "--json", "-"]
    main([*argv, "--train", "sft", "atoms", "rl_atoms"])
    atoms = json.loads(capsys.readouterr().out)
    main([*argv, "--train", "sft", "atoms", "rl_composed", "--compare", "sft", "rl_composed"])
    composed = json.loads(capsys.readouterr().out)
    assert atoms["identification"]["units"][B]["identified"]  # as an atom it is identified ...
    assert atoms["identification"]["modules"][B]["atom_only"]
    n_atoms = sum(t["reachable"] for t in atoms["targets"])
    n_composed = sum(t["reachable"] for t in composed["targets"])
    assert n_atoms < n_composed  # ... but composes more often once seen inside compositions
    for t in atoms["targets"]:  # every interface touching the held-out skill is missing
        needs_b = {k for k in interfaces_of(tuple(map(tuple, t["composition"]))) if B in k}
        assert needs_b <= set(map(tuple, t["uncovered"])) and not (needs_b and t["reachable"])
    assert composed["comparison"]["new_modules"] == [B] and composed["comparison"]["rl_inside"] == 0
    with pytest.raises(ValueError, match="no support 'rl'"):
        main([str(path), "--train", "rl"])
    assert reach(hlsm.Support(depths=(1,)), [chain(A, B)])[0].uncovered


def test_module_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.json"
    path.write_text(json.dumps(hlsm.Support(depths=(2,), skills=(A, B), routings=("chain",)).to_dict()))
    res = subprocess.run([sys.executable, "-m", "hlsm.identify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "skill: 2 units used, rank 2, identified 2" in res.stdout
