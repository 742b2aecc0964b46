"""Policy: config validation, KV-cache decoding vs plain decoding, padding independence, masks."""

from __future__ import annotations

import pytest
import torch

from hlsm.policy import (
    PRESETS,
    Policy,
    PolicyConfig,
    completion_logprobs,
    generate,
)

torch.set_num_threads(1)
PROMPTS = [[1, 5, 6, 7, 8, 30], [1, 9, 30], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 30], [1, 12, 13, 30]]


def tiny(pos="learned", seed=0, sharpen=True, **kw) -> Policy:
    torch.manual_seed(seed)
    cfg = PolicyConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, pos=pos, **kw)
    model = Policy(cfg).eval()
    # random init is near-uniform; sharpen it so greedy paths are not decided by rounding noise
    if sharpen:
        with torch.no_grad():
            model.wte.weight.mul_(20)
    return model


def plain_greedy(model, prompt, n):
    """Greedy decoding the slow way: the whole unpadded prefix through the model at every step."""
    seq = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("n_head", dict(n_head=3, n_embd=32)),
        ("pos", dict(pos="alibi")),
        ("dropout", dict(dropout=1.0)),
        ("vocab_size", dict(vocab_size=0)),
        ("block_size", dict(block_size=-4)),
        ("n_layer", dict(n_layer=2.5)),
    ],
)
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        PolicyConfig(**kwargs)


def test_presets():
    assert set(PRESETS) == {"smoke", "cpu", "paper"}
    sizes = {name: Policy(PolicyConfig.preset(name)).num_params() for name in ("smoke", "cpu")}
    assert sizes["smoke"] < 500_000 < sizes["cpu"]
    with pytest.raises(ValueError, match="unknown preset"):
        PolicyConfig.preset("huge")
    assert PolicyConfig.preset("smoke", pos="rope").pos == "rope"


def test_a_preset_name_is_a_model_shape_sft_defaults_and_grpo_defaults():
    from hlsm import presets
    from hlsm.grpo import GRPO_PRESETS
    from hlsm.sft import SFT_PRESETS

    assert set(presets.MODEL_PRESETS) == set(presets.SFT_PRESETS) == set(presets.GRPO_PRESETS) == set(PRESETS)
    assert SFT_PRESETS is presets.SFT_PRESETS and GRPO_PRESETS is presets.GRPO_PRESETS  # the old names
    for name, shape in presets.MODEL_PRESETS.items():
        assert PRESETS[name] == PolicyConfig(**shape) == PolicyConfig.preset(name)


@pytest.mark.parametrize("pos", ["learned", "rope", "none"])
def test_kv_cache_greedy_equals_plain_greedy(pos):
    model = tiny(pos)
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0.0, eos_id=-1)
    assert out.ids.shape == (len(PROMPTS), 12)
    assert out.mask.all()
    for i, p in enumerate(PROMPTS):
        assert out.ids[i].tolist() == plain_greedy(model, p, 12), f"row {i}"


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_rows_do_not_depend_on_other_prompts(pos):
    model = tiny(pos, seed=1)
    alone = [generate(model, [p], 10, temperature=0.0, eos_id=-1) for p in PROMPTS]
    together = generate(model, PROMPTS, 10, temperature=0.0, eos_id=-1)
    reordered = generate(model, PROMPTS[::-1], 10, temperature=0.0, eos_id=-1)
    for i, a in enumerate(alone):
        assert together.ids[i].tolist() == a.ids[0].tolist()
        assert reordered.ids[len(PROMPTS) - 1 - i].tolist() == a.ids[0].tolist()
        torch.testing.assert_close(together.logprobs[i], a.logprobs[0], atol=1e-5, rtol=1e-5)


def test_generation_mask_stops_after_eos_and_ignores_pad_ids():
    model = tiny(seed=2)
    free = generate(model, PROMPTS, 10, temperature=0.0, eos_id=-1)
    # make the token row 0 writes at step 4 the end token: row 0 must stop right there
    eos = int(free.ids[0, 4])
    first = [row.index(eos) if eos in row else None for row in free.ids.tolist()]
    # and call the token every row writes first "pad": the mask must not care
    pad = int(free.ids[1, 0])
    out = generate(model, PROMPTS, 10, temperature=0.0, eos_id=eos, pad_id=pad)
    for i, f in enumerate(first):
        n = 10 if f is None else f + 1
        assert out.lengths[i] == n
        assert out.mask[i, :n].all() and not out.mask[i, n:].any()
        assert out.ids[i, :n].tolist() == free.ids[i, :n].tolist()  # same tokens: pad_id changes nothing
        assert (out.ids[i, n:] == pad).all()
        assert bool(out.finished[i]) == (f is not None)
        assert (out.logprobs[i, n:] == 0).all()
    assert out.mask[1, 0]  # a real token equal to pad_id is still a completion token


def test_stops_early_when_every_row_finished():
    model = tiny(seed=3)
    free = generate(model, PROMPTS[:1], 10, temperature=0.0, eos_id=-1)
    out = generate(model, PROMPTS[:1], 10, temperature=0.0, eos_id=int(free.ids[0, 2]))
    assert out.ids.shape[1] <= 3 and out.finished.all()


def test_texts_are_decoded_up_to_eos():
    from hlsm.text import Tokenizer

    tok = Tokenizer()
    model = tiny(seed=4, sharpen=False)
    gen = torch.Generator().manual_seed(0)
    out = generate(model, PROMPTS, 8, temperature=1.0, num_samples=2, generator=gen)
    for row, n, text in zip(out.ids.tolist(), out.lengths.tolist(), out.texts):
        assert text == tok.decode(row[:n])


def test_sampling_is_seeded_and_grouped():
    model = tiny(seed=5, sharpen=False)
    kw = dict(max_new_tokens=8, temperature=1.0, num_samples=3, eos_id=-1)
    a = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    assert a.ids.shape == (len(PROMPTS) * 3, 8) and a.num_samples == 3
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids[0::3], a.ids[1::3])  # samples of one prompt differ
    # top_k=1 at any temperature is greedy
    g = generate(model, PROMPTS, 8, temperature=0.0, eos_id=-1)
    k1 = generate(model, PROMPTS, 8, temperature=2.0, top_k=1, eos_id=-1, generator=torch.Generator())
    assert torch.equal(g.ids, k1.ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_match_sampling_logprobs(temperature):
    model = tiny("rope", seed=6, sharpen=False)
    out = generate(model, PROMPTS, 10, temperature=temperature, num_samples=2,
                   generator=torch.Generator().manual_seed(1), eos_id=int(PROMPTS[0][2]))
    logp, ent = completion_logprobs(model, PROMPTS, out.ids, out.mask, temperature)
    assert logp.shape == ent.shape == out.ids.shape
    torch.testing.assert_close(logp, out.logprobs, atol=1e-4, rtol=1e-4)
    assert (logp[~out.mask] == 0).all() and (ent[~out.mask] == 0).all()
    assert (ent[out.mask] >= 0).all() and (logp[out.mask] <= 0).all()
    # one prompt list per completion row gives the same answer
    per_row = [p for p in PROMPTS for _ in range(2)]
    torch.testing.assert_close(completion_logprobs(model, per_row, out.ids, out.mask, temperature)[0], logp)


def test_completion_logprobs_ignore_masked_slots_and_carry_gradients():
    model = tiny(seed=7).train()
    ids = torch.randint(3, 60, (len(PROMPTS), 6))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 4:] = False
    noisy = torch.where(mask, ids, torch.randint(3, 60, ids.shape))
    a, _ = completion_logprobs(model, PROMPTS, ids, mask, with_entropy=False)
    b, none = completion_logprobs(model, PROMPTS, noisy, mask, with_entropy=False)
    assert none is None
    torch.testing.assert_close(a, b)
    a.sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_hidden_states_for_probes():
    model = tiny()
    idx = torch.tensor([PROMPTS[0]])
    logits, hidden = model(idx, return_hidden=True)
    assert len(hidden) == model.config.n_layer + 2
    assert all(h.shape == (1, len(PROMPTS[0]), 32) for h in hidden)
    torch.testing.assert_close(logits, model(idx))
    torch.testing.assert_close(model.lm_head(hidden[-1]), logits)


@pytest.mark.parametrize("pos", ["learned", "rope", "none"])
def test_the_probe_contract_hooks_see_the_hidden_states_and_every_parameter_has_a_layer(pos):
    """What probes/ reads of a Policy: layer_names(), layer_module(i) (its output is hidden[i],
    so a forward hook sees exactly that layer), and param_layer(name) for every parameter."""
    torch.manual_seed(0)
    model = Policy(PolicyConfig(n_layer=3, n_head=2, n_embd=32, block_size=48, pos=pos, bias=True)).eval()
    idx = torch.tensor([PROMPTS[2], PROMPTS[2][::-1]])
    _, hidden = model(idx, return_hidden=True)
    names = model.layer_names()
    assert names == ["emb", "block1", "block2", "block3", "ln_f"] and len(hidden) == len(names)
    for i in range(len(names)):
        seen = []
        handle = model.layer_module(i).register_forward_hook(lambda m, args, out, seen=seen: seen.append(out))
        try:
            model(idx)
        finally:
            handle.remove()
        assert len(seen) == 1 and torch.equal(seen[0], hidden[i]), names[i]
    for bad in (-1, len(names)):
        with pytest.raises(ValueError, match="layer must be in"):
            model.layer_module(bad)
    # every parameter, tied ones under both names, belongs to a layer; every layer owns one
    owners = {name: model.param_layer(name) for name, _ in model.named_parameters(remove_duplicate=False)}
    assert set(owners.values()) == set(names)
    assert owners["lm_head.weight"] == owners["wte.weight"] == "emb"
    assert owners["blocks.2.mlp.c_fc.weight"] == "block3" and owners["ln_f.weight"] == "ln_f"
    assert set(model.state_dict()) <= set(owners)
    with pytest.raises(ValueError, match="not a parameter"):
        model.param_layer("rope_cos")


def test_too_long_raises():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        generate(model, PROMPTS, max_new_tokens=48)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_a_shard_of_rows_samples_what_the_global_batch_samples():
    """generate(rows=(offset, total)) gives a data-parallel rank's rows exactly the global batch's samples."""
    torch.manual_seed(0)
    model = Policy(PolicyConfig.preset("smoke"))
    prompts = [[1, 5, 6, 7], [1, 8, 9], [1, 10, 11, 12, 13], [1, 14]]
    whole = generate(model, prompts, 12, num_samples=3, generator=torch.Generator().manual_seed(7))
    for lo in (0, 2):  # rank 0 and rank 1 of 2, each with two prompts
        part = generate(model, prompts[lo : lo + 2], 12, num_samples=3, generator=torch.Generator().manual_seed(7),
                        rows=(3 * lo, 12))
        assert part.texts == whole.texts[3 * lo : 3 * lo + 6]
        torch.testing.assert_close(part.logprobs, whole.logprobs[3 * lo : 3 * lo + 6, : part.logprobs.shape[1]])
    with pytest.raises(ValueError, match="rows=\\(8, 12\\)"):
        generate(model, prompts[:2], 12, num_samples=3, rows=(8, 12))
