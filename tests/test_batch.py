"""The vectorized (numpy) execution and token rendering equal the scalar reference exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlsm
from hlsm import HLSM, MAX_LEN, ROUTINGS, SKILL_NAMES, SKILLS, Tokenizer
from hlsm.batch import W, apply_routing, apply_skills

STRINGS = st.lists(st.text(alphabet="abcdeuvxyz", max_size=MAX_LEN), min_size=1, max_size=40)


def to_arrays(strings):
    c = np.zeros((len(strings), W), dtype=np.uint8)
    for i, s in enumerate(strings):
        c[i, : len(s)] = np.frombuffer(s.encode(), dtype=np.uint8)
    return c, np.array([len(s) for s in strings], dtype=np.int64)


def to_strings(c, n):
    assert all((row[k:] == 0).all() for row, k in zip(c, n.tolist()))  # zero past each length
    return [bytes(row[:k]).decode() for row, k in zip(c, n.tolist())]


@settings(max_examples=40, deadline=None)
@given(strings=STRINGS, skill=st.sampled_from(SKILL_NAMES))
def test_every_vectorized_skill_equals_the_scalar_skill(strings, skill):
    c, n = to_arrays(strings)
    out = apply_skills(c, n, np.full(len(strings), SKILL_NAMES.index(skill)))
    assert to_strings(*out) == [SKILLS[skill].apply(s) for s in strings]


@settings(max_examples=40, deadline=None)
@given(a=STRINGS, data=st.data(), routing=st.sampled_from(sorted(ROUTINGS)))
def test_every_vectorized_routing_equals_the_scalar_routing(a, data, routing):
    b = data.draw(st.lists(st.text(alphabet="abcxyz", max_size=MAX_LEN), min_size=len(a), max_size=len(a)))
    sids = np.array(data.draw(st.lists(st.integers(0, 23), min_size=len(a), max_size=len(a))))
    arity = len(ROUTINGS[routing].operands(5))
    ops = [to_arrays(a), to_arrays(b)][:arity]
    got = to_strings(*apply_routing(routing, ops, sids))
    want = [ROUTINGS[routing].apply([a[i], b[i]][:arity], SKILLS[SKILL_NAMES[k]]) for i, k in enumerate(sids)]
    assert got == want


@pytest.mark.parametrize("fmt", hlsm.FORMATS)
def test_batch_equals_sample_and_tokens_equal_encode(fmt):
    tok = Tokenizer()
    gen = HLSM(depth=(1, 3, 6), seed=4, fmt=fmt, alphabet="abcxyz", input_len=(1, 9))
    examples, batch = gen.sample(400, start=50), gen.sample_batch(400, start=50)
    assert batch.answers() == [e.answer for e in examples]
    ids, prompt_len, length, spans = batch.tokens(tok)
    for i, ex in enumerate(examples):
        prompt = tok.encode(ex.prompt, bos=True)
        assert ids[i, : length[i]].tolist() == prompt + tok.encode(ex.completion, eos=True)
        assert (ids[i, length[i] :] == tok.pad_id).all() and prompt_len[i] == len(prompt)
        for s in ex.steps:
            if s.span is None:
                assert spans[i, s.t - 1].tolist() == [0, 0]
            else:
                a, b = tok.token_span(ex.completion, s.span)
                assert spans[i, s.t - 1].tolist() == [a + len(prompt), b + len(prompt)]
        assert (spans[i, ex.depth :] == 0).all()


def test_sample_batch_rejects_granularity():
    with pytest.raises(ValueError, match="granularity 1 only"):
        HLSM(depth=3, granularity=2).sample_batch(3)
