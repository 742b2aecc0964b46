"""The HLSM sampler: determinism, recomputable steps, spans, DAGs, constraints, bad input."""

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlsm
from hlsm import HLSM, ROUTINGS, SKILLS, Support
from hlsm.rng import composition_bucket, composition_buckets, input_bucket, input_buckets
from hlsm.support import code
from hlsm.text import render

FORMATS = st.sampled_from(hlsm.FORMATS)


def test_quickstart_contract():
    gen = hlsm.HLSM(depth=3, seed=0)
    batch = gen.sample(1000)
    assert len(batch) == 1000
    ex = batch[0]
    assert ex.depth == 3 and len(ex.steps) == 3
    assert ex.answer == ex.steps[-1].value
    assert ex.completion.endswith("#" + ex.answer)
    assert hlsm.score(ex, ex.completion) == 1.0
    assert hlsm.score(ex, "garbage") == 0.0
    assert ex.prompt.startswith(ex.x + "|")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**40), start=st.integers(0, 10**9), depth=st.integers(1, 6), fmt=FORMATS)
def test_same_seed_gives_byte_identical_items_and_index_access_agrees(seed, start, depth, fmt):
    a = HLSM(depth=depth, seed=seed, fmt=fmt).sample(20, start=start)
    b = HLSM(depth=depth, seed=seed, fmt=fmt).sample(20, start=start)
    assert json.dumps([e.to_dict() for e in a]) == json.dumps([e.to_dict() for e in b])
    assert HLSM(depth=depth, seed=seed, fmt=fmt)[start + 7] == a[7]
    assert HLSM(depth=depth, seed=seed, fmt=fmt).sample(5, start=start + 3) == a[3:8]


def test_seeds_and_streams_give_different_items():
    a = [e.prompt for e in HLSM(depth=3, seed=0).sample(200)]
    assert a != [e.prompt for e in HLSM(depth=3, seed=1).sample(200)]
    assert a != [e.prompt for e in HLSM(depth=3, seed=0, stream="eval").sample(200)]
    # neighbouring seeds do not reproduce each other's stream shifted by one index
    assert a[1:] != [e.prompt for e in HLSM(depth=3, seed=1).sample(199)]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), depth=st.integers(1, 7), fmt=FORMATS, g=st.integers(1, 4))
def test_every_step_recomputes_from_its_operands_and_spans_align(seed, depth, fmt, g):
    for ex in HLSM(depth=depth, seed=seed, fmt=fmt, granularity=g).sample(30):
        values = ex.values
        for st_ in ex.steps:
            assert all(0 <= i < st_.t for i in st_.operands)
            assert st_.operands == ROUTINGS[st_.routing].operands(st_.t)
            again = ROUTINGS[st_.routing].apply([values[i] for i in st_.operands], SKILLS[st_.skill])
            assert again == st_.value
            tok = ROUTINGS[st_.routing].token + SKILLS[st_.skill].token
            assert ex.prompt[slice(*st_.prompt_span)] == tok
            if fmt == "answer":
                assert st_.span is None
                continue
            seg = ex.completion[slice(*st_.span)]
            last = ex.steps[min((st_.t - 1) // g * g + g, depth) - 1]  # the chunk's last step
            assert seg.endswith(last.value) and ex.completion[st_.span[1]] == ";"
            if fmt == "explicit":
                assert tok in seg
        # the reference renderer and the sampler's hot path agree
        p, c, spans, pspans = render(ex.x, [(s.routing, s.skill, s.value) for s in ex.steps], fmt, g)
        assert (p, c) == (ex.prompt, ex.completion)
        assert spans == [s.span for s in ex.steps] and pspans == [s.prompt_span for s in ex.steps]


def test_dag_matches_operands():
    for ex in HLSM(depth=5, seed=3).sample(50):
        g = ex.dag()
        assert nx.is_directed_acyclic_graph(g)
        assert set(g.nodes) == set(range(ex.depth + 1))
        assert set(g.edges) == {(i, s.t) for s in ex.steps for i in s.operands}
        assert g.nodes[ex.depth]["value"] == ex.answer


def test_constraints_are_respected():
    gen = HLSM(
        depth=(2, 4),
        seed=0,
        skills=("reverse", "sort_asc", "shift_up"),
        routings=("chain", "concat"),
        exclude=[(("chain", "reverse"), ("chain", "reverse"))],
        input_len=(3, 5),
        alphabet="xyz",
    )
    depths = set()
    for ex in gen.sample(2000):
        depths.add(ex.depth)
        assert set(ex.x) <= set("xyz") and 3 <= len(ex.x) <= 5
        assert all(s.skill in ("reverse", "sort_asc", "shift_up") for s in ex.steps)
        assert all(s.routing in ("chain", "concat") for s in ex.steps)
        assert ex.composition != (("chain", "reverse"), ("chain", "reverse"))
    assert depths == {2, 4}


def test_explicit_compositions_and_require():
    comps = [(("chain", "reverse"), ("skip", "atbash")), (("twice", "evens"), ("chain", "mirror"))]
    seen = {ex.composition for ex in HLSM(depth=2, compositions=comps, seed=0).sample(200)}
    assert seen == {tuple(c) for c in comps}
    for ex in HLSM(depth=3, require=("riffle",), seed=0).sample(300):
        assert "riffle" in {s.skill for s in ex.steps}


def test_module_names_in_prompt_are_opaque_tokens():
    ex = HLSM(depth=3, seed=0)[0]
    for name in (*SKILLS, *ROUTINGS):
        assert name not in ex.prompt + ex.completion


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depth=0), "depths must be integers >= 1"),
        (dict(skills=("reverse", "flip")), "unknown skill 'flip'"),
        (dict(routings=("teleport",)), "unknown routing 'teleport'"),
        (dict(alphabet="a"), "alphabet must be >= 2"),
        (dict(alphabet="aB"), "alphabet must be >= 2"),
        (dict(input_len=(0, 3)), "input_len"),
        (dict(depth=2, compositions=[(("chain", "reverse"),)]), "empty support"),
        (
            dict(depth=1, compositions=[(("chain", "reverse"),)], exclude=[(("chain", "reverse"),)]),
            "empty support",
        ),
        (dict(require=("reverse",), skills=("sort_asc",)), "contradictory support"),
        (dict(require=("nope",)), "unknown module 'nope'"),
        (dict(buckets=(500, 500)), "buckets"),
        (dict(fmt="latex"), "unknown trace format 'latex'"),
        (dict(granularity=0), "granularity"),
        (dict(colour="red"), "bad HLSM constraint"),
    ],
)
def test_bad_input_names_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HLSM(**kwargs)


def test_practically_empty_support_fails_fast():
    # a 1-bucket slice of a 2-composition universe: almost surely no composition hashes there
    with pytest.raises(ValueError, match="support looks empty"):
        HLSM(depth=1, skills=("reverse",), routings=("chain", "skip"), buckets=(0, 1))


def test_vectorized_and_scalar_hashes_agree():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 240, size=(300, 5))
    depth = rng.integers(1, 6, size=300)
    vec = composition_buckets(codes, depth, partition_seed=7)
    for row, d, b in zip(codes.tolist(), depth.tolist(), vec.tolist()):
        assert composition_bucket(tuple(row[:d]), 7) == b
    chars = rng.integers(97, 103, size=(300, 8)).astype(np.uint8)
    length = rng.integers(1, 9, size=300)
    vec = input_buckets(chars, length, partition_seed=7)
    for row, n, b in zip(chars.tolist(), length.tolist(), vec.tolist()):
        assert input_bucket("".join(map(chr, row[:n])), 7) == b


def test_sampled_items_are_members_of_their_support():
    support = Support(depths=(2, 3), buckets=(100, 400), input_buckets=(0, 700), partition_seed=5)
    for ex in HLSM(support=support, seed=2).sample(500):
        assert support.contains_item(ex.x, ex.composition)
    assert code("chain", "reverse") == 0


def test_export_jsonl(tmp_path):
    split = hlsm.compositional_split(depth=2)
    path = tmp_path / "unseen.jsonl"
    assert hlsm.export_jsonl((split, "unseen"), path, n=50, seed=1) == 50
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 50
    for row in rows:
        assert {"prompt", "completion", "answer", "trace", "selections"} <= set(row)
        assert split.eval["unseen"].contains_item(
            row["x"], [(s["routing"], s["skill"]) for s in row["selections"]]
        )
        assert row["completion"] == row["trace"] + "#" + row["answer"]
    with pytest.raises(ValueError, match="export_jsonl needs"):
        hlsm.export_jsonl("nope", path, n=1)


# --- issue 15 regressions: no empty values (so "#" alone never scores), validated depths ----------


def test_no_item_has_an_empty_value_and_hash_alone_scores_zero():
    assert HLSM(depth=4, seed=0)[25].answer != ""  # was '' on main: '#' scored 1.0
    for depth in (3, 5):
        gen = HLSM(depth=depth, seed=0)
        items = gen.sample(20_000)
        assert all(s.value for ex in items for s in ex.steps)
        assert not any(hlsm.score(ex, "#") for ex in items)
        batch = gen.sample_batch(20_000)
        live = np.arange(depth)[None, :] < batch.depth[:, None]
        assert (batch.value_len[live] > 0).all()
        assert batch.answers() == [ex.answer for ex in items]


def test_a_support_that_only_makes_empty_values_is_refused():
    with pytest.raises(ValueError, match="empty value"):
        HLSM(depth=1, skills=("drop_first",), routings=("chain",), input_len=(1, 1))


@pytest.mark.parametrize("depth", ["34", 2.5, True, (), (0,), (2, "3")])
def test_bad_depths_name_the_value(depth):
    with pytest.raises(ValueError, match="depths must be"):
        HLSM(depth=depth)
