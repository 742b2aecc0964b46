"""Every skill and routing mechanism against worked examples computed by hand."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hlsm import MAX_LEN, ROUTINGS, SKILLS
from hlsm.modules import check_routings, check_skills

SKILL_CASES = {
    "reverse": [("abcd", "dcba"), ("", "")],
    "rotate_left": [("abcd", "bcda"), ("a", "a")],
    "rotate_right": [("abcd", "dabc"), ("", "")],
    "swap_pairs": [("abcde", "badce"), ("abcd", "badc")],
    "swap_ends": [("abcd", "dbca"), ("a", "a")],
    "swap_halves": [("abcde", "cdeab"), ("abcd", "cdab")],
    "riffle": [("abcdef", "adbecf"), ("abcde", "adbec")],
    "sort_asc": [("dbca", "abcd"), ("bab", "abb")],
    "sort_desc": [("bdac", "dcba"), ("aba", "baa")],
    "shift_up": [("abz", "bca"), ("a-b", "b-c")],
    "shift_down": [("bca", "abz"), ("", "")],
    "atbash": [("abc", "zyx"), ("mn", "nm")],
    "next_vowel": [("bead", "bied"), ("uxo", "axu")],
    "shift_by_index": [("aaaa", "abcd"), ("zz", "za")],
    "drop_first": [("abcd", "bcd"), ("", "")],
    "drop_last": [("abcd", "abc"), ("a", "")],
    "dup_first": [("abc", "aabc"), ("", "")],
    "dup_last": [("abc", "abcc"), ("z", "zz")],
    "first_half": [("abcde", "abc"), ("abcd", "ab")],
    "second_half": [("abcde", "de"), ("abcd", "cd")],
    "evens": [("abcde", "ace"), ("ab", "a")],
    "mirror": [("abc", "abccba"), ("abcdefgh", "abcdefghhgfe")],
    "dedupe_runs": [("aabbba", "aba"), ("abc", "abc")],
    "unique": [("abcab", "abc"), ("bbb", "b")],
}


def test_inventory_is_24_skills_and_10_routings_with_docs_and_tokens():
    assert len(SKILLS) == 24 and len(ROUTINGS) == 10
    assert set(SKILL_CASES) == set(SKILLS)
    assert set(ROUTING_CASES) == set(ROUTINGS)
    tokens = [m.token for m in (*SKILLS.values(), *ROUTINGS.values())]
    assert len(set(tokens)) == 34
    for m in (*SKILLS.values(), *ROUTINGS.values()):
        assert m.doc and "\n" not in m.doc, m.name


@pytest.mark.parametrize("name", sorted(SKILL_CASES))
def test_skill_worked_examples(name):
    for given_, want in SKILL_CASES[name]:
        assert SKILLS[name].apply(given_) == want, (name, given_)


# (history h_0..h_{t-1}, skill, operand indices read by step t = len(history), expected h_t)
ROUTING_CASES = {
    "chain": [(["abc", "xyz"], "reverse", (1,), "zyx")],
    "reuse_input": [(["abc", "xyz"], "reverse", (0,), "cba")],
    "skip": [(["abc", "de", "fgh"], "reverse", (1,), "ed"), (["abc"], "reverse", (0,), "cba")],
    "concat": [(["abc", "de", "fgh"], "reverse", (1, 2), "hgfed"), (["ab"], "reverse", (0, 0), "baba")],
    "interleave": [
        (["abc", "de", "fgh"], "reverse", (0, 2), "hcgbfa"),
        (["abcd", "xy"], "drop_first", (0, 1), "xbycd"),
    ],
    "longer": [
        (["abc", "de", "fgh"], "reverse", (1, 2), "hgf"),
        (["a", "bc", "de"], "reverse", (1, 2), "ed"),
    ],
    "shorter": [
        (["abc", "de", "fgh"], "reverse", (1, 2), "ed"),
        (["a", "bc", "de"], "reverse", (1, 2), "ed"),
    ],
    "if_even": [(["abc", "xyz"], "reverse", (1,), "xyz"), (["abc", "wxyz"], "reverse", (1,), "zyxw")],
    "map_halves": [(["q", "abcde"], "reverse", (1,), "baedc")],
    "twice": [(["q", "abc"], "shift_up", (1,), "cde")],
}


@pytest.mark.parametrize("name", sorted(ROUTING_CASES))
def test_routing_worked_examples(name):
    routing = ROUTINGS[name]
    for history, skill, ops, want in ROUTING_CASES[name]:
        t = len(history)
        assert routing.operands(t) == ops, (name, t)
        assert routing.apply([history[i] for i in ops], SKILLS[skill]) == want, (name, history)


@given(st.text(max_size=40))
def test_skills_are_total_and_bounded(s):
    for skill in SKILLS.values():
        out = skill.apply(s)
        assert isinstance(out, str) and len(out) <= MAX_LEN
        assert skill.apply(s) == out  # deterministic


@given(st.lists(st.text(alphabet="abcdefxyz", max_size=MAX_LEN), min_size=1, max_size=6))
def test_routings_are_total_bounded_and_read_only_earlier_values(history):
    t = len(history)
    for routing in ROUTINGS.values():
        ops = routing.operands(t)
        assert all(0 <= i < t for i in ops)
        for skill in SKILLS.values():
            out = routing.apply([history[i] for i in ops], skill)
            assert isinstance(out, str) and len(out) <= MAX_LEN


def test_unknown_module_names_are_rejected_with_the_allowed_list():
    with pytest.raises(ValueError, match="unknown skill 'revers'.*allowed: reverse"):
        check_skills(["revers"])
    with pytest.raises(ValueError, match="unknown routing 'loop'.*allowed: chain"):
        check_routings(["chain", "loop"])
    with pytest.raises(ValueError, match="empty skill list"):
        check_skills([])
