"""Probes: capture alignment, linear probes and their baselines, identification score, causal patching,
drift, and the report CLI on a tiny SFT run."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from hlsm.model import HLSM
from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS
from hlsm.policy import Policy, PolicyConfig, generate
from hlsm.sft import SFTConfig, train
from hlsm.support import compositional_split
from hlsm.text import Tokenizer
from probes.activations import KINDS, Activations, capture, token_rows
from probes.causal import counterfactual, patch_step, patch_step_layers, patched_generate, prefill_states
from probes.drift import by_layer, effective_rank, output_kl, param_stats
from probes.linear import (
    LinearProbe,
    control_labels,
    identification_score,
    matched_accuracy,
    probe_layers,
    probe_report,
)
from probes.report import heatmap_data, main, print_tables, probe_tables, read_report, run_data

torch.set_num_threads(1)  # tiny models: one thread beats two contended ones
TOK = Tokenizer()
SKILLS4 = ("reverse", "rotate_left", "shift_up", "swap_pairs")


def tiny_model(seed: int = 0, n_layer: int = 2) -> Policy:
    torch.manual_seed(seed)
    return Policy(PolicyConfig(n_layer=n_layer, n_head=2, n_embd=32, block_size=64)).eval()


def small_split():
    """Depth-2 compositions of 4 skills under chain / skip: 31 seen (SFT), 18 unseen compositions."""
    return compositional_split(depth=2, skills=SKILLS4, routings=("chain", "skip"), deeper=(),
                               input_len=(4, 5), alphabet="abcd")


def items(split, n: int, fmt: str = "values", granularity: int = 1):
    return [ex for name in ("seen", "unseen")
            for ex in HLSM(support=split.support(name), seed=0, fmt=fmt, granularity=granularity,
                           stream=f"test:{name}").sample(n)]


# --- capture ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, granularity", [("values", 1), ("explicit", 1), ("values", 2), ("answer", 1)])
def test_capture_labels_align_with_step_spans(fmt, granularity):
    split = small_split()
    exs = items(split, 6, fmt, granularity)
    model = tiny_model()
    seen = split.train["sft"].contains
    acts = capture(model, exs, KINDS, seen=seen, batch_size=5)  # batches cut across the examples
    assert acts.X.shape == (4, len(acts), 32) and acts.layer_names == ["emb", "block1", "block2", "ln_f"]

    for e, ex in enumerate(exs):
        ids = TOK.encode(ex.prompt, bos=True) + TOK.encode(ex.completion, eos=True)
        plen = len(TOK.encode(ex.prompt, bos=True))
        p_off, c_off = TOK.offsets(ex.prompt), TOK.offsets(ex.completion)
        mine = np.flatnonzero(acts.example == e)
        assert set(acts.seen[mine]) == {seen(ex.composition)}
        for r in mine:
            p, st, kind = acts.pos[r], ex.steps[acts.step[r] - 1], KINDS[acts.kind[r]]
            assert (SKILL_NAMES[acts.skill[r]], ROUTING_NAMES[acts.routing[r]]) == (st.skill, st.routing)
            assert acts.depth[r] == ex.depth and acts.token[r] == ids[p] and acts.prev[r] == ids[p - 1]
            if kind in ("routing_token", "skill_token"):
                s, end = p_off[p - 1]  # prompt token p - 1 (position 0 is <bos>)
                assert st.prompt_span[0] <= s and end <= st.prompt_span[1]
                want = ROUTINGS[st.routing].token if kind == "routing_token" else SKILLS[st.skill].token
                assert ex.prompt[s:end] == want
            elif kind == "before":
                assert p == plen + TOK.token_span(ex.completion, st.span)[0] - 1
            else:  # first / step: the token's characters lie inside the step's chunk
                s, end = c_off[p - plen]
                assert st.span[0] <= s and end <= st.span[1]
        # conversely, every completion token inside a step's chunk is a "step" row of that step
        for st in ex.steps:
            if st.span is None:
                continue
            inside = {plen + k for k, (s, end) in enumerate(c_off) if st.span[0] <= s and end <= st.span[1]}
            rows = mine[(acts.kind[mine] == KINDS.index("step")) & (acts.step[mine] == st.t)]
            assert set(acts.pos[rows]) == inside
        if fmt == "answer":
            assert set(acts.kind[mine]) <= {KINDS.index("routing_token"), KINDS.index("skill_token")}

    # activations are the unbatched forward's, so padding and batching leak nothing
    for r in np.linspace(0, len(acts) - 1, 7).astype(int):
        ex = exs[acts.example[r]]
        ids = torch.tensor([TOK.encode(ex.prompt, bos=True) + TOK.encode(ex.completion, eos=True)])
        with torch.no_grad():
            _, hidden = model(ids, return_hidden=True)
        for li in range(4):
            torch.testing.assert_close(torch.from_numpy(acts.X[li, r]), hidden[li][0, acts.pos[r]],
                                       atol=1e-5, rtol=1e-5)


def test_capture_selects_layers_and_rejects_bad_kinds():
    exs = items(small_split(), 3)
    acts = capture(tiny_model(), exs, ("before",), layers=[0, 3])
    assert acts.layer_names == ["emb", "ln_f"] and acts.X.shape[0] == 2
    assert len(acts.select(acts.step == 1)) == len(exs)
    listed = capture(tiny_model(), exs, ("before",), seen=[exs[0].composition], layers=[0])  # a set of comps
    assert (listed.seen == np.isin(listed.example, [e for e, ex in enumerate(exs)
                                                    if ex.composition == exs[0].composition])).all()
    with pytest.raises(ValueError, match="unknown position kinds"):
        token_rows(exs[0], ("middle",))
    with pytest.raises(ValueError, match="layers"):
        capture(tiny_model(), exs, layers=[7])


# --- linear probes and the identification score -----------------------------------------------


def synthetic(n: int = 600, k: int = 4, d: int = 16, seed: int = 0) -> Activations:
    """Layer 0 holds the label along planted directions; layer 1 is noise. Tokens are random types."""
    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    means = rng.normal(size=(k, d)) * 3
    X = np.stack([means[y] + rng.normal(size=(n, d)), rng.normal(size=(n, d))]).astype(np.float32)
    z = np.zeros(n, dtype=np.int64)
    return Activations(X=X, layer_names=["planted", "noise"], skill=y, routing=z, step=z + 1, depth=z + 2,
                       seen=np.arange(n) < n // 2, example=np.arange(n), pos=z, kind=z,
                       token=rng.integers(40, size=n), prev=rng.integers(40, size=n))


def test_probe_recovers_planted_structure_and_the_control_task_does_not():
    acts = synthetic()
    rows = {r["layer"]: r for r in probe_layers(acts, "skill", acts.seen, ~acts.seen, window=1)}
    planted, noise = rows["planted"], rows["noise"]
    assert planted["acc"] > 0.95 and planted["ident"] > 0.9
    assert planted["control"] < 0.45 and planted["selectivity"] > 0.5  # types carry no signal in X
    assert noise["acc"] < 0.4 and noise["ident"] < 0.15
    assert planted["majority"] < 0.4 and planted["classes"] == 4
    report = probe_report(acts, "skill")
    assert {r["eval"] for r in report} == {"seen", "unseen"} and len(report) == 4
    assert LinearProbe().fit(acts.X[0], acts.skill).score(acts.X[0], acts.skill) > 0.95
    assert (LinearProbe().fit(acts.X[0], np.zeros(len(acts))).predict(acts.X[0]) == 0).all()  # one class


def test_control_labels_are_consistent_per_type_and_keep_the_label_set():
    rng = np.random.default_rng(1)
    types = rng.integers(30, size=(500, 2))
    y = rng.integers(5, size=500) + 10
    c = control_labels(types, y, seed=3)
    assert set(np.unique(c)) <= set(np.unique(y))
    for t in np.unique(types, axis=0):
        assert len(set(c[(types == t).all(1)])) == 1
    assert (c == control_labels(types, y, seed=3)).all()


def test_identification_score_is_one_when_perfect_and_zero_at_chance():
    rng = np.random.default_rng(0)
    y = rng.integers(6, size=4000)
    assert identification_score(y, y) == 1.0
    assert identification_score(y, (y + 1) % 6) == 1.0  # renamed classes still identify the modules
    assert matched_accuracy(y, (y + 1) % 6) == 1.0
    assert identification_score(y, rng.integers(6, size=4000)) < 0.03
    assert identification_score(y, np.zeros_like(y)) == 0.0
    assert np.isnan(identification_score(np.zeros(10), np.zeros(10)))
    half = np.where(rng.random(4000) < 0.5, y, rng.integers(6, size=4000))
    assert 0.4 < identification_score(y, half) < 0.7


def test_random_init_model_identifies_nothing_at_chance():
    split = small_split()
    exs = items(split, 60)
    acts = capture(tiny_model(seed=3), exs, ("before",), seen=split.train["sft"].contains)
    # the embedding at the step's separator carries no module: chance
    emb = [r for r in probe_report(acts, "skill") if r["layer"] == "emb"]
    assert all(r["ident"] < 0.1 for r in emb)
    # labels drawn independently of the input: chance at every layer
    acts.skill = np.random.default_rng(0).integers(4, size=len(acts))
    assert all(r["ident"] < 0.15 for r in probe_report(acts, "skill"))


# --- causal patching --------------------------------------------------------------------------


def test_counterfactual_swaps_one_module_and_recomputes_the_trace():
    ex = items(small_split(), 1)[0]
    assert counterfactual(ex, 1) == ex  # nothing swapped: the same example
    other = next(s for s in SKILLS4 if s != ex.steps[0].skill)
    cf = counterfactual(ex, 1, skill=other)
    assert cf.steps[0].skill == other and cf.steps[1].skill == ex.steps[1].skill
    assert cf.steps[0].value == SKILLS[other].fn(ex.x)  # chain and skip both read h_0 at step 1
    assert cf.answer == cf.steps[1].value and cf.completion.endswith("#" + cf.answer)
    a, b = TOK.encode(ex.prompt), TOK.encode(cf.prompt)
    assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
    with pytest.raises(ValueError, match="outside"):
        counterfactual(ex, 3)


def _step_columns(exs, t):
    return [[p for p, s, _ in token_rows(ex, ("routing_token", "skill_token")) if s == t] for ex in exs]


def _greedy(model, prompts):
    return generate(model, prompts, 20, temperature=0.0, eos_id=TOK.eos_id, pad_id=TOK.pad_id)


def test_patching_a_step_with_itself_changes_nothing():
    exs = items(small_split(), 4)
    model = tiny_model(seed=1)
    prompts = [TOK.encode(ex.prompt, bos=True) for ex in exs]
    plain = _greedy(model, prompts)
    for layer in (0, 1, 2):
        donor = prefill_states(model, prompts, layer)
        patched = patched_generate(model, prompts, layer, _step_columns(exs, 2), donor, max_new_tokens=20)
        assert torch.equal(patched.ids, plain.ids) and torch.equal(patched.logprobs, plain.logprobs)
    res = patch_step(model, exs, t=1, layer=1, what="self")
    assert res.patched_texts == res.texts and not res.differ.any() and (res.follow == res.stay).all()


def test_patching_a_module_tokens_embedding_is_running_the_twin():
    exs = items(small_split(), 4)
    model = tiny_model(seed=2)
    twins = [counterfactual(ex, 1, skill=next(s for s in SKILLS4 if s != ex.steps[0].skill)) for ex in exs]
    prompts = [TOK.encode(ex.prompt, bos=True) for ex in exs]
    twin_prompts = [TOK.encode(tw.prompt, bos=True) for tw in twins]
    orig, twin = _greedy(model, prompts), _greedy(model, twin_prompts)
    assert not torch.equal(orig.logprobs, twin.logprobs)

    def patched(layer):
        donor = prefill_states(model, twin_prompts, layer)
        return patched_generate(model, prompts, layer, _step_columns(exs, 1), donor, max_new_tokens=20)

    at_emb = patched(0)  # every position of the layer-0 stream is now the twin's
    assert torch.equal(at_emb.ids, twin.ids) and torch.equal(at_emb.logprobs, twin.logprobs)
    # one block up, later positions have already read the original module token: no longer the twin
    assert not torch.equal(patched(1).logprobs, twin.logprobs)

    res = patch_step(model, exs, t=1, layer=0, what="skill", seed=0)
    assert res.patched_texts == res.twin_texts
    assert all(tw.steps[0].skill != ex.steps[0].skill for ex, tw in zip(res.examples, res.twins))
    assert res.summary()["n"] == int(res.differ.sum())
    with pytest.raises(ValueError, match="layer"):
        patch_step(model, exs, t=1, layer=5)
    every = patch_step_layers(model, exs, t=1, layers=[0, 1, 2], what="skill", seed=0)
    for layer in (0, 1, 2):  # all layers at once (unpatched runs shared) == one layer at a time
        one = patch_step(model, exs, t=1, layer=layer, what="skill", seed=0)
        assert every[layer].patched_texts == one.patched_texts
        for name in ("follow", "stay", "differ", "base_ok", "twin_ok"):
            assert np.array_equal(getattr(every[layer], name), getattr(one, name)), name


# --- drift ------------------------------------------------------------------------------------


def test_drift_of_a_model_with_itself_is_zero():
    exs = items(small_split(), 5)
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    assert output_kl(model, model, exs) == 0.0
    assert output_kl(model, copy.deepcopy(model), exs) == 0.0
    assert output_kl(model, other, exs) > 0
    rows = param_stats(model, copy.deepcopy(model))
    assert all(r["delta_norm"] == 0 and r["rel_change"] == 0 for r in rows)
    assert all(r["rel_change"] == 0 for r in by_layer(rows))
    assert {r["layer"] for r in by_layer(rows)} == {"emb", "block1", "block2", "ln_f"}
    moved = [r for r in param_stats(other, model) if "ln" not in r["name"]]  # norms init to ones in both
    assert all(r["rel_change"] > 0 for r in moved)
    assert abs(effective_rank(torch.eye(5)) - 5) < 1e-9 and abs(effective_rank(torch.ones(4, 3)) - 1) < 1e-6
    assert effective_rank(torch.zeros(3, 3)) == 0.0


# --- the report CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "sft"
    cfg = SFTConfig(preset="smoke", model={"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 48},
                    split=small_split(), train_supports={"sft": 1.0}, eval_supports=("seen",), steps=6,
                    batch_size=8, lr=1e-3, warmup_steps=2, eval_every=0, eval_n=4, ckpt_every=0,
                    log_every=1, device="cpu")
    train(cfg, out, progress=False)
    return out


def test_report_cli_prints_the_tables_and_writes_the_heatmap(sft_run, tmp_path, capsys):
    png = tmp_path / "probes.png"
    assert main(["--run", str(sft_run), "--base", str(sft_run), "--n", "12", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    for text in ("skill at 'before' positions", "routing at 'before' positions", "rand_id", "causal:",
                 "KL(base || run) on 24 probe items = 0.0000", "per-module step accuracy"):
        assert text in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_reads_a_grpo_runs_split_from_its_init(sft_run, tmp_path):
    grpo = tmp_path / "grpo"
    grpo.mkdir()
    shutil.copy(sft_run / "policy.pt", grpo / "policy.pt")
    config = {"init": str(sft_run), "split": None, "rl_support": "rl", "replay_fraction": 0.0}
    (grpo / "config.json").write_text(json.dumps({"config": config}))
    split, fmt, g, names = run_data(grpo)
    assert split.name == small_split().name and (fmt, g) == ("values", 1) and names == {"sft", "rl"}


def test_a_saved_reports_text_redraws_its_heatmap_with_the_printed_numbers(tmp_path, capsys):
    acts = synthetic()  # skills decodable at one layer; a single routing (nothing to decode)
    tables = probe_tables(acts, acts, 1, 1.0, 0)
    print(f"run runs/some-run (split {small_split().name}, format values, granularity 1; seen = ...)")
    print_tables(tables, acts, "before")
    text = capsys.readouterr().out
    about, layers, data = read_report(text)
    want = heatmap_data(tables, acts.layer_names)
    assert about == {"run": "runs/some-run", "split": small_split().name, "kind": "before"}
    assert layers == acts.layer_names and data["routing"] is None and want["routing"] is None
    assert data["skill"]["classes"] == want["skill"]["classes"] == 4
    for measure, values in want["skill"]["rows"].items():  # as printed: to 3 decimals
        assert data["skill"]["rows"][measure] == pytest.approx(values, abs=5e-4, nan_ok=True), measure
    report, png = tmp_path / "report.txt", tmp_path / "replot.png"
    report.write_text(text)
    assert main(["--replot", str(report), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    ([], "--run"),
    (["--run", "/no/such/run"], "no such run directory"),
    (["--kind", "middle"], "invalid choice"),
    (["--n", "1"], "--n must be >= 4"),
    (["--out", "probes.jpg"], "must be a .png path"),
    (["--window", "3"], "invalid choice"),
    (["--base", "/no/such/base"], "no such run directory"),
    (["--replot", "/no/such/report.txt", "--out", "x.png"], "no such file"),
    (["--replot", "/no/such/report.txt"], "--replot needs --out"),
])
def test_report_cli_rejects_bad_arguments_with_a_message(sft_run, argv, message, capsys):
    if argv and argv[0] != "--run":
        argv = ["--run", str(sft_run), *argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
