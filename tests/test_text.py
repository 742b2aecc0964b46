"""Rendering, tokenizer, parser and rewards."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlsm
from hlsm import HLSM, Tokenizer, parse_completion
from hlsm.text import FORMS, REWARDS, VOCAB_FILE, expected_chunks, render, trace_form, trace_format, write_vocab

# the docstring example of hlsm.text, computed by hand: chain reverse, then skip shift_up
STEPS = [("chain", "reverse", "dcba"), ("skip", "shift_up", "bcde")]


def test_formats_worked_example():
    assert render("abcd", STEPS, "explicit") == (
        "abcd|R0S00 R2S09>",
        "R0S00=dcba;R2S09=bcde;#bcde",
        [(0, 10), (11, 21)],
        [(5, 10), (11, 16)],
    )
    assert render("abcd", STEPS, "values")[1:3] == ("dcba;bcde;#bcde", [(0, 4), (5, 9)])
    assert render("abcd", STEPS, "answer")[1:3] == ("#bcde", [None, None])
    # granularity 2: one compound chunk hides the intermediate value
    assert render("abcd", STEPS, "explicit", 2)[1:3] == ("R0S00R2S09=bcde;#bcde", [(0, 15), (0, 15)])
    assert render("abcd", STEPS, "values", 2)[1] == "bcde;#bcde"


def test_the_worked_example_is_what_the_modules_compute():
    assert [v for *_, v in hlsm.execute("abcd", [("chain", "reverse"), ("skip", "shift_up")])] == [
        "dcba",
        "bcde",
    ]


def test_vocab_file_is_up_to_date(tmp_path):
    assert write_vocab(tmp_path / "v.json") == json.loads(VOCAB_FILE.read_text())
    tok = Tokenizer()
    assert len(tok) == 69 and tok.pad_id == 0 and tok.eos_id == 2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), fmt=st.sampled_from(hlsm.FORMATS), g=st.integers(1, 3))
def test_tokenizer_round_trip_and_token_spans(seed, fmt, g):
    tok = Tokenizer()
    for ex in HLSM(depth=(1, 4), seed=seed, fmt=fmt, granularity=g).sample(20):
        text = ex.prompt + ex.completion
        ids = tok.encode(text, bos=True, eos=True)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == text
        for s in ex.steps:
            i, j = tok.token_span(ex.prompt, s.prompt_span)
            assert j - i == 2  # routing token + skill token
            if s.span is not None:
                i, j = tok.token_span(ex.completion, s.span)
                assert tok.decode(tok.encode(ex.completion)[i:j]) == ex.completion[slice(*s.span)]


def test_tokenizer_errors_and_robust_decode():
    tok = Tokenizer()
    with pytest.raises(ValueError, match="'Q'"):
        tok.encode("abQ")
    with pytest.raises(ValueError, match="'S99'"):
        tok.encode("S99")
    assert tok.decode([tok.encode("ab")[0], 999, -3, tok.pad_id, tok.eos_id, 5]) == "a"


@given(st.text(max_size=60), st.sampled_from(hlsm.FORMATS))
def test_parser_never_raises_and_rewards_stay_in_range(text, fmt):
    p = parse_completion(text, fmt)
    assert isinstance(p.well_formed, bool)
    ex = HLSM(depth=2, seed=0, fmt=fmt)[0]
    for fn in REWARDS.values():
        assert 0.0 <= fn(ex, text) <= 1.0


@given(st.lists(st.sampled_from(list("ab#;=R0S01xyz")), max_size=30).map("".join))
def test_parser_never_raises_on_near_miss_text(text):
    for fmt in hlsm.FORMATS:
        parse_completion(text, fmt)
    parse_completion(None, "values")
    parse_completion(b"bytes", "values")


@pytest.mark.parametrize("fmt", hlsm.FORMATS)
def test_gold_completions_get_full_reward(fmt):
    for ex in HLSM(depth=(1, 5), seed=1, fmt=fmt).sample(100):
        assert {k: f(ex, ex.completion) for k, f in REWARDS.items()} == {
            "answer": 1.0,
            "format": 1.0,
            "structure": 1.0,
        }
        p = parse_completion(ex.completion, fmt)
        assert p.well_formed and p.answer == ex.answer
        assert p.chunks == expected_chunks(ex)


def test_structure_reward_partial_credit_and_padding():
    ex = HLSM(
        depth=3, seed=0, compositions=[(("chain", "reverse"), ("chain", "shift_up"), ("chain", "sort_asc"))]
    )[0]
    h1, h2, h3 = ex.values[1:]
    assert h1 != "zz"
    assert hlsm.structure_reward(ex, f"{h1};zz;{h3};#{h3}") == pytest.approx(2 / 3)
    assert hlsm.answer_reward(ex, f"{h1};zz;{h3};#{h3}") == 1.0
    # padding with extra chunks never raises the score
    assert hlsm.structure_reward(ex, f"{h1};{h2};{h3};{h3};{h3};#{h3}") == pytest.approx(3 / 5)
    assert hlsm.format_reward(ex, f"{h1};{h2};{h3};{h3};#{h3}") == 0.0
    assert hlsm.format_reward(ex, f"{h1};{h2};{h3};#") == 1.0  # well formed, wrong answer
    assert hlsm.answer_reward(ex, f"{h1};{h2};{h3};#") == 0.0


def test_explicit_structure_reward_checks_modules():
    ex = HLSM(depth=2, seed=0, fmt="explicit", compositions=[(("chain", "reverse"), ("skip", "atbash"))])[0]
    h1, h2 = ex.values[1:]
    assert hlsm.structure_reward(ex, f"R0S00={h1};R2S11={h2};#{h2}") == 1.0
    assert hlsm.structure_reward(ex, f"R1S00={h1};R2S11={h2};#{h2}") == 0.5  # wrong routing token
    assert hlsm.format_reward(ex, f"R0S99={h1};R2S11={h2};#{h2}") == 0.0  # unknown token


def test_an_unknown_format_or_a_non_example_is_the_callers_error():
    with pytest.raises(ValueError, match="unknown trace format 'bogus'"):
        parse_completion("ab;#ab", "bogus")
    with pytest.raises(ValueError, match="must be an hlsm Example"):
        hlsm.score(None, "#ab")
    assert parse_completion(None).well_formed is False  # model output never raises


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), fmt=st.sampled_from(hlsm.FORMATS), g=st.integers(1, 3))
def test_trace_form_reads_every_golden_trace_as_what_it_shows(seed, fmt, g):
    """A golden trace is read as its format when it shows every step, as chunked when its chunks hide
    some, and an answer-only trace as "answer"; the reader never sees the example, only the text."""
    for ex in HLSM(depth=(1, 4), seed=seed, fmt=fmt, granularity=g).sample(20):
        if fmt == "answer":
            want = "answer"
        else:
            want = fmt if g == 1 or ex.depth == 1 else "chunked"
        assert trace_form(ex.completion, ex.depth) == want


@given(st.lists(st.sampled_from(list("ab#;=R0S01xyz")), max_size=30).map("".join), st.integers(1, 5))
def test_trace_form_never_raises(text, depth):
    assert trace_form(text, depth) in FORMS
    assert trace_form(None, depth) == "other"


def test_trace_form_names_mixed_and_overlong_traces_other():
    assert trace_form("dcba;R2S09=bcde;#bcde", 2) == "other"  # a value chunk beside an explicit one
    assert trace_form("a;b;c;#c", 2) == "other"  # more chunks than steps
    assert trace_form("R0S00R2S09=bcde;R1S01=bcde;#bcde", 2) == "other"  # two steps in a chunk, and more
    assert trace_form("R0S00R2S09=bcde;#bcde", 2) == "chunked"
    assert trace_form("#BCDE", 2) == "other"  # not a value


def test_trace_format_specs():
    assert trace_format("explicit") == ("explicit", 1) and trace_format("values/3") == ("values", 3)
    for bad in ("explicit/0", "answer/2", "nosuch", "values/x", "", None):
        with pytest.raises(ValueError, match="unknown trace format"):
            trace_format(bad)
