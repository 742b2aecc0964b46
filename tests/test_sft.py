"""SFT: config validation, prompt masking, deterministic data, a smoke run that learns, DDP == 1 process."""

from __future__ import annotations

import pytest
import torch

from hlsm.checkpoint import load_policy, read_metrics, seed_everything
from hlsm.evaluate import lookup
from hlsm.model import HLSM
from hlsm.policy import Policy
from hlsm.sft import (
    SFTConfig,
    local_batch,
    make_batch,
    make_split,
    micro_batches,
    mix_counts,
    render,
    sft_loss,
    train,
)
from hlsm.support import EVAL_INPUTS, TRAIN_INPUTS, Split, Support
from hlsm.text import Tokenizer
from tests.ddp import free_port, join_group

torch.set_num_threads(1)  # tiny models: one thread beats two contended ones

COMPS = (
    (("chain", "reverse"), ("chain", "swap_pairs")),
    (("chain", "swap_pairs"), ("chain", "rotate_left")),
    (("chain", "rotate_left"), ("chain", "reverse")),
    (("chain", "shift_up"), ("chain", "reverse")),
)


def small_split(comps=COMPS, input_len=(4, 5), alphabet="abcd") -> Split:
    """Four explicit depth-2 compositions; training and evaluation inputs are disjoint."""
    common = dict(depths=(2,), routings=("chain",), compositions=comps, input_len=input_len,
                  alphabet=alphabet)
    return Split(
        "smoke",
        train={"sft": Support(input_buckets=TRAIN_INPUTS, **common),
               "atoms": Support(depths=(1,), routings=("chain",), skills=("reverse", "shift_up"),
                                input_buckets=TRAIN_INPUTS, input_len=input_len, alphabet=alphabet)},
        eval={"seen": Support(input_buckets=EVAL_INPUTS, **common)},
    )


def tiny_cfg(**kw) -> SFTConfig:
    base = dict(preset="smoke", model={"n_layer": 1, "n_embd": 32, "n_head": 2}, split=small_split(),
                train_supports={"sft": 1.0}, eval_supports=("seen",), steps=6, batch_size=8, lr=1e-3,
                warmup_steps=2, eval_every=0, eval_n=8, ckpt_every=3, log_every=1, device="cpu")
    return SFTConfig(**{**base, **kw})


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("lr", dict(lr=-1e-3)),
        ("lr", dict(lr=0.0)),
        ("steps", dict(steps=0)),
        ("batch_size", dict(batch_size=0)),
        ("label_smoothing", dict(label_smoothing=1.0)),
        ("grad_clip", dict(grad_clip=float("nan"))),
        ("fmt", dict(fmt="verbose")),
        ("preset", dict(preset="giant")),
        ("model", dict(model={"n_layers": 3})),
        ("n_head", dict(model={"n_head": 5})),
        ("train_supports", dict(train_supports={"seen": 1.0})),  # an eval support: would leak
        ("train_supports", dict(train_supports={"sft": 0.0})),
        ("eval_supports", dict(eval_supports=("nowhere",))),
        ("split", dict(split={"factory": "nope"})),
        ("batch_size", dict(train_supports={"sft": 1.0, "atoms": 0.01}, batch_size=4)),
        ("formats", dict(formats={"sft": "verbose"})),
        ("formats", dict(formats={"sft": "answer/2"})),
        ("formats", dict(formats={"nowhere": "values"})),  # not a support of the split
        ("formats", dict(formats=["sft"])),
    ],
)
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**kwargs).validate()


def test_a_support_with_no_examples_is_rejected():
    empty = Split("empty", train={"sft": Support(depths=(2,), buckets=(0, 1), skills=("reverse",),
                                                 routings=("chain",))},
                  eval={"seen": Support(depths=(2,), input_buckets=EVAL_INPUTS)})
    with pytest.raises(ValueError, match="train_supports.*no examples"):
        tiny_cfg(split=empty).validate()


def test_config_round_trips_through_json():
    cfg = tiny_cfg()
    again = SFTConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert make_split(again.split).to_dict() == cfg.split.to_dict()
    default = SFTConfig.from_preset("cpu")
    assert make_split(default.split).train["sft"].depths == (2,)
    with pytest.raises(ValueError, match="preset"):
        SFTConfig.from_preset("nope")


def test_mix_counts():
    assert mix_counts({"a": 1.0, "b": 0.25}, 10) == {"a": 8, "b": 2}
    assert mix_counts({"a": 1.0, "b": 1.0, "c": 1.0}, 32) == {"a": 11, "b": 11, "c": 10}
    assert sum(mix_counts({"a": 3.0, "b": 7.0}, 33).values()) == 33


# --- data and loss --------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", [1, 2])
def test_loss_mask_covers_exactly_the_completion(granularity):
    tok = Tokenizer()
    gen = HLSM(support=small_split().train["sft"], seed=0, fmt="values", granularity=granularity)
    x, y, mask = make_batch([render(gen, 5, 10, tok)], tok.pad_id, 96)
    for i, ex in enumerate(gen.sample(5, start=10)):
        prompt = tok.encode(ex.prompt, bos=True)
        completion = tok.encode(ex.completion, eos=True)
        assert x[i, : len(prompt)].tolist() == prompt
        assert y[i][mask[i]].tolist() == completion  # the targets scored: the completion and <eos>
        assert not mask[i, : len(prompt) - 1].any()  # no prompt token is a target
        assert mask.sum(1)[i] == len(completion)


def test_loss_ignores_prompt_and_padding_targets():
    logits = torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    y2 = torch.where(mask, y, torch.randint(0, 11, (2, 5)))
    logits2 = torch.where(mask[..., None], logits, torch.randn(2, 5, 11))
    assert sft_loss(logits, y, mask) == sft_loss(logits2, y2, mask)
    by_hand = -torch.log_softmax(logits, -1).gather(2, y[..., None])[..., 0][mask].sum()
    torch.testing.assert_close(sft_loss(logits, y, mask), by_hand)


def test_step_k_takes_items_k_times_b_and_ranks_split_it():
    tok, split = Tokenizer(), small_split()
    streams = {n: HLSM(support=split.train[n], seed=3, stream=f"sft:{n}") for n in ("sft", "atoms")}
    counts = mix_counts({"sft": 1.0, "atoms": 0.5}, 12)  # 8 + 4 per batch
    x, y, mask = local_batch(streams, counts, 5, 0, 12, tok, 96)
    parts = [render(streams["sft"], 8, 5 * 8, tok), render(streams["atoms"], 4, 5 * 4, tok)]
    want = make_batch(parts, tok.pad_id, 96)
    assert all(torch.equal(u, v) for u, v in zip((x, y, mask), want))
    # the rank shards, each padded to its own width, are the global batch's rows
    for lo, hi in ((0, 4), (4, 8), (8, 12), (6, 10)):
        xs, ys, ms = local_batch(streams, counts, 5, lo, hi, tok, 96)
        w = xs.shape[1]
        assert torch.equal(xs, x[lo:hi, :w]) and torch.equal(ms, mask[lo:hi, :w])
        assert not mask[lo:hi, w:].any()


def test_data_offset_skips_items_of_every_stream():
    """``SFTConfig.data_offset``: a continuation's step k reads the items after those it skipped."""
    tok, split = Tokenizer(), small_split()
    streams = {n: HLSM(support=split.train[n], seed=3, stream=f"sft:{n}") for n in ("sft", "atoms")}
    counts = {"sft": 6, "atoms": 6}
    later = local_batch(streams, counts, 7, 0, 12, tok, 96)
    skipped = local_batch(streams, counts, 2, 0, 12, tok, 96, skip=5 * 6)
    assert all(torch.equal(u, v) for u, v in zip(later, skipped))
    with pytest.raises(ValueError, match="SFTConfig.data_offset"):
        tiny_cfg(data_offset=-1).validate()


def test_length_grouped_micro_batches_give_the_whole_batch_gradient():
    tok, split = Tokenizer(), small_split()
    streams = {n: HLSM(support=split.train[n], seed=0) for n in ("sft", "atoms")}
    x, y, mask = local_batch(streams, {"sft": 6, "atoms": 4}, 0, 0, 10, tok, 96)
    torch.manual_seed(0)
    model = Policy(tiny_cfg().model_config())

    def grads(size):
        model.zero_grad()
        chunks = micro_batches(x, tok.pad_id, size)
        assert sorted(torch.cat([r for r, _ in chunks]).tolist()) == list(range(10))
        for rows, w in chunks:
            assert not mask[rows, w:].any()  # trimming drops padding only
            (sft_loss(model(x[rows, :w]), y[rows, :w], mask[rows, :w]) / mask.sum()).backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(10), grads(3)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_too_long_sequences_name_block_size():
    tok = Tokenizer()
    gen = HLSM(support=small_split().train["sft"], seed=0)
    with pytest.raises(ValueError, match="block_size"):
        make_batch([render(gen, 4, 0, tok)], tok.pad_id, 8)


# --- training -------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_sft_learns_its_training_compositions(tmp_path):
    """The smoke preset fits four depth-2 compositions: >= 95% exact answers on fresh inputs."""
    cfg = SFTConfig.from_preset(
        "smoke", split=small_split(), train_supports={"sft": 1.0}, eval_supports=("seen",),
        steps=600, batch_size=32, lr=3e-3, eval_every=0, eval_n=128, ckpt_every=0, log_every=50,
        device="cpu",
    )
    result = train(cfg, tmp_path / "run", progress=False)
    seen = lookup(result.rows, "seen")
    assert seen["answer"] >= 0.95, seen
    for comp in COMPS:
        name = "+".join(f"{r}.{s}" for r, s in comp)
        assert lookup(result.rows, "seen", "composition", name)["answer"] >= 0.8
    assert (tmp_path / "run" / "eval.csv").exists() and (tmp_path / "run" / "policy.pt").exists()
    losses = [m["loss"] for m in read_metrics(result.out) if "loss" in m]
    assert losses[-1] < 0.1 * losses[0]


def test_cli_runs_and_writes_a_run_directory(tmp_path, capsys):
    import json

    from hlsm.sft import main

    out = tmp_path / "cli"
    args = ["--preset", "smoke", "--out", str(out), "--steps", "2", "--batch-size", "4", "--eval-n", "4",
            "--model", '{"n_layer": 1, "n_embd": 32, "n_head": 2}', "--device", "cpu", "--no-progress",
            "--eval-supports", '["seen"]']
    assert main(args) == 0
    assert "done: step 2" in capsys.readouterr().out
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["steps"] == 2 and record["seed"] == 0 and "git_hash" in record
    with pytest.raises(SystemExit) as e:  # the CLI says which flag continues a run, and writes nothing
        main(args)
    assert e.value.code == 2 and "pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # a finished run resumes to the same end


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    join_group(rank, world, port)
    train(SFTConfig.from_dict(cfg_dict), out, progress=False)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    """2 gloo ranks, each taking half of the global batch, end where 1 process ends."""
    import torch.multiprocessing as mp

    cfg = tiny_cfg(steps=4, batch_size=8, train_supports={"sft": 1.0, "atoms": 0.5}, ckpt_every=0)
    mp.spawn(_ddp_worker, args=(2, free_port(), cfg.to_dict(), str(tmp_path / "ddp")), nprocs=2)
    train(cfg, tmp_path / "one", progress=False)
    ddp, _ = load_policy(tmp_path / "ddp")
    one, _ = load_policy(tmp_path / "one")
    for (name, a), b in zip(one.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    seed_everything(cfg.seed)
    init = Policy(cfg.model_config())  # what training started from: it moved
    assert (one.wte.weight - init.wte.weight).abs().max() > 1e-4


def test_continued_sft_starts_from_the_init_policy(tmp_path):
    base = train(tiny_cfg(), tmp_path / "base", progress=False)
    with pytest.raises(ValueError, match="SFTConfig.init"):
        tiny_cfg(init=str(tmp_path / "nowhere")).validate()
    # a different shape is ignored: continued SFT keeps the init policy's shape and weights
    cfg = tiny_cfg(init=str(tmp_path / "base"), model={"n_layer": 3}, steps=1, lr=1e-9, warmup_steps=0)
    cont = train(cfg, tmp_path / "cont", progress=False)
    assert cont.model.config == base.model.config
    for a, b in zip(base.model.state_dict().values(), cont.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_each_support_renders_in_its_own_format():
    """``SFTConfig.formats``: atoms explicit beside compounds in values, chunked or answer only; a support
    not named keeps ``fmt``. Step k's batch holds step k's items of each stream, each rendered as its
    support says (the fast granularity-1 path and the chunked path alike)."""
    from hlsm.sft import data_streams, encode_examples, local_batch, make_batch, mix_counts
    from hlsm.text import trace_form

    split, tok = small_split(), Tokenizer()
    for spec, form in (("values", "values"), ("explicit/2", "chunked"), ("answer", "answer")):
        cfg = tiny_cfg(fmt="explicit", train_supports={"sft": 1.0, "atoms": 0.5}, formats={"sft": spec}).validate()
        streams, counts = data_streams(cfg, split), mix_counts(cfg.train_supports, cfg.batch_size)
        assert {trace_form(e.completion, e.depth) for e in streams["atoms"].sample(8)} == {"explicit"}
        assert {trace_form(e.completion, e.depth) for e in streams["sft"].sample(8)} == {form}
        for k in (0, 3):
            items = [ex for name, n in counts.items() for ex in streams[name].sample(n, k * n)]
            want = make_batch([encode_examples(tok, items)], tok.pad_id, 96)
            got = local_batch(streams, counts, k, 0, cfg.batch_size, tok, 96)
            assert all(torch.equal(a, b) for a, b in zip(want, got)), (spec, k)
    assert SFTConfig.from_dict(cfg.to_dict()).formats == {"sft": "answer"}
