"""GRPO: the loss/advantage math against hand-computed values, config validation, and short runs."""

from __future__ import annotations

import math

import pytest
import torch

import hlsm
from hlsm.checkpoint import NonFiniteLossError, load_policy, read_config, read_metrics
from hlsm.grpo import (
    GRPO_PRESETS,
    GRPOConfig,
    aggregate_loss,
    clipped_policy_loss,
    combined_rewards,
    compute_group_advantages,
    k3_kl,
    load_init,
    masked_mean,
    sampled_reward,
)
from hlsm.grpo import train as grpo_train
from hlsm.model import HLSM
from hlsm.sft import SFTConfig
from hlsm.sft import train as sft_train
from hlsm.support import Split, Support
from tests.ddp import free_port, join_group

torch.set_num_threads(1)  # tiny models: one thread beats two contended ones

# --- the math -------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0])
    plain = compute_group_advantages(r, 4, scale_std=False)
    assert torch.allclose(plain, torch.tensor([0.5, -0.5, -0.5, 0.5, -0.75, -0.75, -0.75, 2.25]))
    scaled = compute_group_advantages(r, 4, scale_std=True, eps=0.0)
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1/sqrt(3); group 2: mean 0.75, std 1.5
    s = 0.5 * math.sqrt(3)
    assert torch.allclose(scaled, torch.tensor([s, -s, -s, s, -0.5, -0.5, -0.5, 1.5]))


@pytest.mark.parametrize("scale_std", [True, False])
def test_tied_rewards_give_zero_advantage_not_nan(scale_std):
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    adv = compute_group_advantages(r, 3, scale_std=scale_std)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv, torch.zeros(9))


def test_group_advantages_reject_ragged_batch():
    with pytest.raises(ValueError, match="multiple of G=4"):
        compute_group_advantages(torch.zeros(6), 4)


def test_masked_mean_and_aggregations_hand_computed():
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 6.0, 9.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3)
    assert torch.allclose(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # all masked: 0, not NaN
    assert aggregate_loss(x, mask, "seq_mean").item() == pytest.approx((1.5 + 4.0) / 2)
    assert aggregate_loss(x, mask, "token_mean").item() == pytest.approx(7 / 3)
    assert aggregate_loss(x, mask, "constant", max_len=4).item() == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(x, mask, "sum")


def test_masking_after_end_token_ignores_garbage():
    """Whatever sits after a sequence's end (masked positions) changes no aggregated loss."""
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    a = torch.randn(2, 5)
    b = torch.where(mask, a, torch.full_like(a, 1e6))
    for mode in ("seq_mean", "token_mean", "constant"):
        assert aggregate_loss(a, mask, mode, max_len=5) == aggregate_loss(b, mask, mode, max_len=5)
    lp = torch.randn(2, 5)
    old = torch.where(mask, lp, lp + 10.0)  # huge ratios only where masked
    loss, meta = clipped_policy_loss(lp, old, torch.tensor([1.0, -1.0]), 0.2, 0.2)
    assert masked_mean(meta["clip_low"].float(), mask).item() == 0.0
    assert masked_mean(meta["clip_high"].float(), mask).item() == 0.0
    assert aggregate_loss(loss, mask, "token_mean").item() == pytest.approx((-3 + 2) / 5)  # ratio 1: -A


def test_clipped_policy_loss_hand_computed():
    ratio = torch.tensor([[0.5, 1.0, 1.5]])
    old = torch.zeros(1, 3)
    lp = torch.log(ratio)
    loss, meta = clipped_policy_loss(lp, old, torch.tensor([1.0]), eps_low=0.2, eps_high=0.2)
    assert torch.allclose(loss, torch.tensor([[-0.5, -1.0, -1.2]]))
    assert meta["clip_high"].tolist() == [[False, False, True]]
    assert meta["clip_low"].tolist() == [[False, False, False]]
    loss, meta = clipped_policy_loss(lp, old, torch.tensor([-1.0]), eps_low=0.2, eps_high=0.28)
    assert torch.allclose(loss, torch.tensor([[0.8, 1.0, 1.5]]))
    assert meta["clip_low"].tolist() == [[True, False, False]]
    assert meta["clip_high"].tolist() == [[False, False, False]]
    # asymmetric clip ("clip-higher"): 1.5 > 1 + 0.28 is clipped to 1.28 for a positive advantage
    loss, _ = clipped_policy_loss(lp, old, torch.tensor([2.0]), eps_low=0.2, eps_high=0.28)
    assert torch.allclose(loss, torch.tensor([[-1.0, -2.0, -2.56]]))


def test_clipped_policy_loss_gradient_at_ratio_one_is_advantage():
    lp = torch.log(torch.tensor([[0.3, 0.6]])).requires_grad_(True)
    loss, meta = clipped_policy_loss(lp, lp.detach(), torch.tensor([2.0]), 0.2, 0.2)
    assert torch.equal(meta["ratio"], torch.ones(1, 2))
    loss.sum().backward()
    assert torch.allclose(lp.grad, torch.tensor([[-2.0, -2.0]]))


def test_k3_kl_hand_computed_and_zero_for_identical():
    lp = torch.log(torch.tensor([0.5, 0.2]))
    ref = torch.log(torch.tensor([0.25, 0.2]))
    kl = k3_kl(lp, ref)
    assert kl[0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl[1].item() == 0.0
    same = torch.randn(3, 7)
    assert torch.equal(k3_kl(same, same), torch.zeros(3, 7))
    assert (k3_kl(torch.randn(50), torch.randn(50)) >= 0).all()


def test_combined_rewards_weighted_sum():
    ex = HLSM(depth=2, seed=0).sample(1)[0]
    first, rest = ex.completion.split(";", 1)
    wrong_step = "z" + first + ";" + rest  # right answer, wrong first intermediate value
    texts = [ex.completion, wrong_step, "garbage"]
    total, per = combined_rewards([ex] * 3, texts, {"answer": 1.0, "structure": 0.5})
    assert per["answer"].tolist() == [1.0, 1.0, 0.0]
    assert per["structure"].tolist() == [1.0, 0.5, 0.0]
    assert total.tolist() == [1.5, 1.25, 0.0]
    with pytest.raises(ValueError, match="unknown reward 'outcome'"):
        combined_rewards([ex], ["x"], {"outcome": 1.0})


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("group_size", dict(group_size=1)),
        ("rollout_batch_size", dict(prompts_per_step=4, group_size=4, rollout_batch_size=12)),
        ("minibatches", dict(prompts_per_step=3, group_size=3, minibatches=2)),
        ("rewards", dict(rewards={"outcome": 1.0})),
        ("rewards", dict(rewards={})),
        ("lr", dict(lr=-1e-4)),
        ("lr", dict(lr=0.0)),
        ("eps_low", dict(eps_low=1.5)),
        ("beta", dict(beta=float("nan"))),
        ("temperature", dict(temperature=0.0)),
        ("loss_agg", dict(loss_agg="sum")),
        ("steps", dict(steps=0)),
        ("max_draws", dict(max_draws=0)),
        ("dynamic_sampling", dict(dynamic_sampling="yes")),
        ("dynamic_sampling", dict(dynamic_sampling=True, objective="rft")),  # RFT learns from tied groups too
        ("minibatches", dict(dynamic_sampling=True, prompts_per_step=4, group_size=4, minibatches=8)),
        ("log_every", dict(dynamic_sampling=True, log_every=2)),  # its controls read every step's kept_items
        ("prompts_from", dict(dynamic_sampling=True, prompts_from="runs/x")),
        ("prompts_from", dict(prompts_from="/nonexistent/run")),
    ],
)
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=f"GRPOConfig.{field}"):
        GRPOConfig(**kwargs).validate()


def test_supports_must_exist_and_hold_examples():
    empty = Support(depths=(1,), skills=("reverse",), routings=("chain",), buckets=(0, 1))
    split = Split("s", train={"rl": empty, "sft": Support(depths=(2,))}, eval={"seen": Support(depths=(2,))})
    with pytest.raises(ValueError, match="GRPOConfig.rl_support='rl'.*empty"):
        GRPOConfig(eval_supports=("seen",)).check_split(split)
    with pytest.raises(ValueError, match="GRPOConfig.eval_supports: 'rl_prompts' is not an evaluation support"):
        GRPOConfig(rl_support="sft").check_split(split)
    GRPOConfig(rl_support="sft", eval_supports=("seen",)).check_split(split)


def test_config_round_trips_and_presets():
    cfg = GRPOConfig.from_preset("cpu", beta=0.01, rewards={"answer": 1.0, "structure": 0.5})
    assert GRPOConfig(**cfg.to_dict()).to_dict() == cfg.to_dict()
    assert cfg.prompts_per_step == GRPO_PRESETS["cpu"]["prompts_per_step"] and cfg.beta == 0.01
    with pytest.raises(ValueError, match="preset"):
        GRPOConfig.from_preset("giant")


# --- training -------------------------------------------------------------------------------

SKILLS4 = ["reverse", "rotate_left", "shift_up", "swap_pairs"]
SPLIT = {"factory": "compositional", "depth": 2, "skills": SKILLS4, "routings": ["chain"], "deeper": [],
         "input_len": [3, 5]}
REWARD = {"answer": 1.0, "structure": 0.5}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A brief, label-smoothed smoke SFT: mid-range sampled reward, so GRPO groups have variance."""
    out = tmp_path_factory.mktemp("grpo") / "sft"
    cfg = SFTConfig.from_preset(
        "smoke", split=SPLIT, train_supports={"sft": 1.0, "atoms": 0.5}, eval_supports=("seen",), steps=400,
        lr=5e-3, label_smoothing=0.1, eval_every=0, eval_n=8, ckpt_every=0, log_every=100, device="cpu",
    )
    sft_train(cfg, out, progress=False)
    return out


def tiny(sft_run, **kw) -> GRPOConfig:
    base = dict(init=str(sft_run), steps=4, prompts_per_step=4, group_size=4, lr=3e-4, rewards=REWARD,
                rl_support="rl_inside", eval_supports=("unseen",), eval_every=0, eval_n=4, ckpt_every=2,
                device="cpu")
    return GRPOConfig(**{**base, **kw})


def _heldout_examples(split, n=128):
    return [ex for name in ("rl_prompts", "unseen")
            for ex in HLSM(support=split.support(name), seed=0, stream=f"eval:{name}").sample(n)]


@pytest.mark.slow
def test_smoke_grpo_raises_reward_on_heldout_compositions(sft_run, tmp_path):
    """GRPO on the SFT compositions raises the mean sampled reward on compositions it never saw.

    Setup: 4 skills, depth-2 chain compositions split by hash into SFT (~half), RL-bucket and
    held-out buckets; a brief label-smoothed SFT leaves sampled (T=1) reward mid-range. GRPO runs
    30 steps (16 prompts x 8 samples, answer + 0.5 structure reward) on prompts of the SFT
    compositions (``rl_inside``, training inputs). Checked, on 4 samples of the same 256 prompts
    before and after, with fresh evaluation inputs: (1) mean reward on the compositions outside
    both SFT and RL (``rl_prompts`` and ``unseen`` supports, disjoint from every RL prompt's
    composition) rises by >= 0.02; (2) reward on fresh inputs of the RL compositions rises by
    >= 0.08. Much of the gain is sharpening the smoothed policy; that is what transfers.
    """
    before, _ = load_policy(sft_run)
    split = load_init(str(sft_run))[1]
    cfg = tiny(sft_run, steps=30, prompts_per_step=16, group_size=8, ckpt_every=0)
    result = grpo_train(cfg, tmp_path / "grpo", progress=False)
    heldout = _heldout_examples(split)
    seen = HLSM(support=split.support("seen"), seed=0, stream="eval:seen").sample(128)
    r0 = sampled_reward(before, heldout, REWARD, samples=4)["reward"]
    r1 = sampled_reward(result.model, heldout, REWARD, samples=4)["reward"]
    s0 = sampled_reward(before, seen, REWARD, samples=4)["reward"]
    s1 = sampled_reward(result.model, seen, REWARD, samples=4)["reward"]
    assert r1 - r0 >= 0.02, (r0, r1)
    assert s1 - s0 >= 0.08, (s0, s1)
    # the run logged what the design asks for (README, GRPO), every step
    steps = [m for m in read_metrics(result.out) if "reward_mean" in m]
    assert len(steps) == 30
    for key in ("reward_std", "reward/answer", "reward/structure", "zero_std_frac", "completion_len",
                "entropy", "clip_low", "clip_high", "grad_norm", "rollout_s", "update_s", "tokens_per_s"):
        assert all(math.isfinite(m[key]) for m in steps), key
    # every parameter tensor moved
    after = result.model.state_dict()
    for name, p in before.state_dict().items():
        assert not torch.equal(p, after[name]), name


def test_one_pass_ratio_is_exactly_one_and_cached_logprobs_match(sft_run, tmp_path):
    """With one update per rollout the ratio is 1 by construction; with several, the no-grad cached
    old log-probs equal the first update's, so its ratio is exactly 1 too. Sampler log-probs agree."""
    for epochs in (1, 2):
        cfg = tiny(sft_run, steps=2, epochs=epochs, ckpt_every=0)
        metrics = [m for m in read_metrics(grpo_train(cfg, tmp_path / f"e{epochs}", progress=False).out)
                   if "reward_mean" in m]
        assert all(m["ratio_dev_first"] == 0.0 for m in metrics)
        assert all(m["logp_mismatch"] < 1e-4 for m in metrics)


def test_skipping_zero_advantage_rows_and_sorting_by_length_change_nothing(sft_run, tmp_path, monkeypatch):
    """The update from length-sorted micro-batches without zero-advantage rows equals the plain one."""
    import hlsm.grpo as grpo

    cfg = tiny(sft_run, steps=3, prompts_per_step=8, micro_batch_size=8, minibatches=2, epochs=2,
               ckpt_every=0)
    fast = grpo_train(cfg, tmp_path / "fast", progress=False)
    skipped = [m["trained_frac"] for m in read_metrics(fast.out) if "loss" in m]
    assert min(skipped) < 1.0  # some tied groups were left out

    def plain(self, adv, lengths):  # every row of each (interleaved) minibatch, in order, one micro-batch
        return [[torch.arange(j, self.n, self.cfg.minibatches)] for j in range(self.cfg.minibatches)]

    monkeypatch.setattr(grpo.GRPO, "plan", plain)
    slow = grpo_train(cfg, tmp_path / "slow", progress=False)
    for (name, a), b in zip(fast.model.state_dict().items(), slow.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)  # float noise, through Adam
    init, _ = load_policy(sft_run)
    assert (fast.model.wte.weight - init.wte.weight).abs().max() > 1e-3  # ... far below how far it moved


def test_resume_equals_uninterrupted(sft_run, tmp_path):
    """A run stopped after step 2 (its checkpoint) and resumed ends bit-identical to one that wasn't."""
    cfg = tiny(sft_run, minibatches=2, epochs=2, beta=0.05, replay_fraction=0.5)
    whole = grpo_train(cfg, tmp_path / "whole", progress=False)
    grpo_train(tiny(sft_run, steps=2, minibatches=2, epochs=2, beta=0.05, replay_fraction=0.5),
               tmp_path / "cut", progress=False)
    resumed = grpo_train(cfg, tmp_path / "cut", resume=True, progress=False)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    timing = {"rollout_s", "update_s", "step_s", "tokens_per_s"}

    def rows(run):  # the training records (the cut run also evaluated at its end, step 2)
        return [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(run) if "loss" in m]

    assert rows(tmp_path / "whole") == rows(tmp_path / "cut")
    assert {"kl", "replay_nll"} <= set(read_metrics(tmp_path / "whole")[1])


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(sft_run, tmp_path, monkeypatch):
    import hlsm.grpo_trainer as trainer  # the module whose updates call it

    calls, real = [], trainer.clipped_policy_loss

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, meta = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) == 3 else loss), meta

    monkeypatch.setattr(trainer, "clipped_policy_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 3") as err:
        grpo_train(tiny(sft_run, ckpt_every=1), tmp_path / "nan", progress=False)
    assert err.value.step == 3 and err.value.last_good == tmp_path / "nan" / "checkpoint.pt"
    state = torch.load(err.value.last_good, weights_only=False)
    assert state["step"] == 2
    assert all(torch.isfinite(p).all() for p in state["model"].values())


def test_cli_runs_and_prints_a_summary(sft_run, tmp_path, capsys):
    from hlsm.grpo import main

    out = tmp_path / "cli"
    args = ["--init", str(sft_run), "--out", str(out), "--steps", "2", "--prompts-per-step", "2",
            "--group-size", "2", "--eval-n", "4", "--eval-supports", '["unseen"]',
            "--rewards", '{"answer": 1, "format": 0.1}', "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert "done: step 2: reward" in capsys.readouterr().out
    assert (out / "policy.pt").exists() and (out / "eval.csv").exists() and (out / "eval_init.csv").exists()
    with pytest.raises(SystemExit) as e:  # bad input: one line, exit status 2, before anything is written
        main([*args[:-1], "--group-size", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "GRPOConfig.group_size" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:  # a support the init run's split lacks: checked before training too
        main([*args[:1], str(sft_run), "--out", str(tmp_path / "cli2"), "--rl-support", "nosuch"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nosuch" in err and not (tmp_path / "cli2").exists()


def _ddp_worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    join_group(rank, world, port)
    result = grpo_train(GRPOConfig(**cfg), out, progress=False)
    torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(minibatches=2, replay_fraction=0.5, loss_agg="token_mean"),
                                dict(objective="rft", prompts_per_step=8, group_size=8)], ids=["grpo", "rft"])
def test_ddp_two_ranks_match_one_process(sft_run, tmp_path, kw):
    """2 gloo ranks, each sampling its half of the prompts with its rows of the global batch's noise,
    end (to float tolerance) where 1 process with the same global batch ends: same rollouts, same
    interleaved minibatches, token-mean loss and replay NLL over all ranks' tokens; RFT's mean NLL is
    over the kept completions of all ranks."""
    import torch.multiprocessing as mp

    cfg = tiny(sft_run, steps=2, ckpt_every=0, **kw)
    mp.spawn(_ddp_worker, args=(2, free_port(), cfg.to_dict(), str(tmp_path / "ddp")), nprocs=2)
    one = grpo_train(cfg, tmp_path / "one", progress=False).model.state_dict()
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    init, _ = load_policy(sft_run)
    for name in init.state_dict():
        assert torch.equal(r0[name], r1[name]), name
        torch.testing.assert_close(r0[name], one[name], atol=1e-5, rtol=1e-4, msg=name)
    assert (init.wte.weight - one["wte.weight"]).abs().max() > 1e-4  # it moved, by more than the tolerance
    ddp_steps = [m for m in read_metrics(tmp_path / "ddp") if "loss" in m]
    one_steps = [m for m in read_metrics(tmp_path / "one") if "loss" in m]
    assert [m["step"] for m in ddp_steps] == [1, 2]  # rank 0 alone logs
    for a, b in zip(ddp_steps, one_steps):  # the same completions: same rewards, lengths, tokens
        for key in ("reward_mean", "completion_len", "zero_std_frac", "trained_frac"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_mixed_precision_path_runs_end_to_end(sft_run, tmp_path, monkeypatch):
    """The CUDA path's dtypes (bf16 autocast, bf16 KV cache) on CPU: sampling, log-probs, SFT and
    GRPO steps run, stay finite, and agree with fp32 to bf16 precision. (CI has no GPU.)"""
    import hlsm.policy as policy
    from hlsm.policy import completion_logprobs, generate

    model, _ = load_policy(sft_run)
    prompts = [[1, 5, 6, 7, 20, 30], [1, 8, 9, 20, 31]]
    gen = generate(model, prompts, 12, num_samples=4, generator=torch.Generator().manual_seed(0))
    fp32, _ = completion_logprobs(model, prompts, gen.ids, gen.mask)
    monkeypatch.setitem(policy.AUTOCAST_DTYPE, "cpu", torch.bfloat16)
    low, ent = completion_logprobs(model, prompts, gen.ids, gen.mask)
    assert low.dtype == ent.dtype == torch.float32  # log-softmax in fp32 after bf16 matmuls
    assert 0 < (low - fp32).abs().max() < 0.25  # bf16 changed the numbers, by bf16-sized amounts
    bf = generate(model, prompts, 12, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert bf.logprobs.dtype == torch.float32 and torch.isfinite(bf.logprobs).all()
    sft = SFTConfig.from_preset("smoke", split=SPLIT, steps=3, eval_every=0, eval_n=4, ckpt_every=0, device="cpu")
    sft_train(sft, tmp_path / "sft", progress=False)
    run = grpo_train(tiny(sft_run, steps=2, ckpt_every=0, beta=0.05), tmp_path / "grpo", progress=False)
    steps = [m for m in read_metrics(run.out) if "loss" in m]
    assert len(steps) == 2 and all(math.isfinite(m["loss"]) and math.isfinite(m["kl"]) for m in steps)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in run.model.parameters())


# --- issue 15 regressions ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1 / 3, 1 / 5, 1 / 6])
@pytest.mark.parametrize("scale_std", [True, False])
def test_tied_fractional_rewards_get_exactly_zero_advantage(value, scale_std):
    """On main, eight rewards of 1/3 got A ~ +0.03 each: an ulp of mean residual over (std + eps)."""
    r = torch.cat([torch.full((8,), value), torch.tensor([value, 0.0] * 4)])
    adv = compute_group_advantages(r, 8, scale_std=scale_std)
    assert torch.equal(adv[:8], torch.zeros(8))
    assert (adv[8:] != 0).all()


def test_grpo_never_trains_on_an_evaluation_support():
    split = hlsm.compositional_split(depth=2, skills=SKILLS4, routings=("chain",), deeper=())
    with pytest.raises(ValueError, match="GRPOConfig.rl_support='unseen' is not a training support"):
        GRPOConfig(rl_support="unseen", replay_support="unseen", replay_fraction=0.5).check_split(split)
    with pytest.raises(ValueError, match="GRPOConfig.replay_support='seen' is not a training support"):
        GRPOConfig(replay_support="seen", replay_fraction=0.5).check_split(split)
    GRPOConfig(replay_fraction=0.5).check_split(split)


def test_labelled_control_trains_on_exactly_the_grpo_prompts_and_replay(sft_run):
    """Step k of the control's SFT batch is GRPO step k's prompts (golden completions) + replay items."""
    from hlsm.control import labelled_control
    from hlsm.grpo import GRPO
    from hlsm.sft import data_streams, encode_examples, local_batch, make_batch, make_split, mix_counts
    from hlsm.text import Tokenizer

    cfg = tiny(sft_run, prompts_per_step=6, replay_fraction=0.5, steps=3)
    model, split, fmt, gran = load_init(cfg.init)
    trainer = GRPO(cfg, model, split, fmt, gran)
    control = labelled_control(cfg).validate()
    assert control.init == cfg.init and control.steps == cfg.steps and control.lr == cfg.lr
    streams = data_streams(control, make_split(control.split))
    counts = mix_counts(control.train_supports, control.batch_size)
    assert counts == {"rl_inside": 6, "sft": 3}
    tok, block = Tokenizer(), model.config.block_size
    for k in range(cfg.steps):
        items = trainer.prompts(k) + trainer.replay_items(k)
        want = make_batch([encode_examples(tok, items)], tok.pad_id, block)
        got = local_batch(streams, counts, k, 0, control.batch_size, tok, block)
        for a, b in zip(want, got):
            assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="would change the items"):
        labelled_control(cfg, batch_size=7)


def test_rft_advantages_hand_computed():
    from hlsm.grpo_loss import rft_advantages

    correct = torch.tensor([True, False, True, False, False, False, False, False])
    torch.testing.assert_close(rft_advantages(correct, 2 / 8), torch.tensor([4.0, 0, 4, 0, 0, 0, 0, 0]))
    assert rft_advantages(torch.zeros(4, dtype=torch.bool), 0.0).tolist() == [0.0] * 4


def test_rft_control_samples_what_grpo_samples_and_its_update_is_sft_on_the_correct_ones(sft_run, monkeypatch):
    """The RFT control's step-k rollout is GRPO's (same prompts, samples, rewards) from the same weights,
    and its update's gradient is that of the mean NLL of the correct completions alone."""
    from hlsm.control import rft_control
    from hlsm.grpo import GRPO
    from hlsm.grpo_loss import RFT

    cfg = tiny(sft_run, rewards={"answer": 1.0}, grad_clip=0.0, prompts_per_step=6, steps=3, micro_batch_size=2)
    rft = rft_control(cfg)
    assert rft.objective == RFT and {**rft.to_dict(), "objective": cfg.objective} == cfg.to_dict()
    with pytest.raises(ValueError, match="already an RFT run"):
        rft_control(rft)
    for bad in (dict(rewards={"structure": 1.0}), dict(loss_agg="token_mean"), dict(epochs=2), dict(minibatches=2),
                dict(beta=0.05), dict(replay_fraction=0.5)):  # what would make it more than the kept NLL
        with pytest.raises(ValueError, match="GRPOConfig.objective"):
            rft_control(tiny(sft_run, **bad))
    model, split, fmt, gran = load_init(cfg.init)
    grpo_t = GRPO(cfg, model, split, fmt, gran)
    rft_t = GRPO(rft, load_init(cfg.init)[0], split, fmt, gran)
    kept_any = False
    for k in range(cfg.steps):
        a, b = grpo_t.rollout(k), rft_t.rollout(k)
        assert a.prompts == b.prompts and torch.equal(a.gen.ids, b.gen.ids) and torch.equal(a.reward, b.reward)
        correct = b.per["answer"] == 1.0
        assert torch.equal(b.adv > 0, correct) and (b.adv >= 0).all()
        kept_any |= bool(correct.any())
    assert kept_any, "the base never answers right: the test checks nothing"
    # the update: RFT's gradient equals that of the mean NLL over the kept completions
    monkeypatch.setattr(rft_t.opt, "step", lambda: None)
    ro = next(r for r in map(rft_t.rollout, range(20)) if (r.per["answer"] == 1.0).any())  # something kept
    plan = rft_t.plan(ro.adv, ro.gen.lengths)
    rft_t._update(0, 0, ro, plan[0], None, None, None, rft.lr, dict.fromkeys(hlsm.grpo.STATS, 0.0))
    got = {n: p.grad.clone() for n, p in rft_t.model.named_parameters() if p.grad is not None}
    rft_t.model.zero_grad()
    kept = torch.nonzero(ro.per["answer"] == 1.0).flatten()
    lp, m = rft_t.logprobs(rft_t.model, ro, kept)
    (-(lp * m).sum(1) / m.sum(1)).mean().backward()
    want = {n: p.grad for n, p in rft_t.model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


def test_resuming_a_finished_grpo_run_logs_nothing_again(sft_run, tmp_path):
    cfg = tiny(sft_run, steps=2)
    first = grpo_train(cfg, tmp_path / "run", progress=False)
    log = read_metrics(tmp_path / "run")
    again = grpo_train(cfg, tmp_path / "run", resume=True, progress=False)
    assert read_metrics(tmp_path / "run") == log
    assert again.metrics["reward_mean"] == first.metrics["reward_mean"]


def test_a_run_whose_groups_all_tie_at_zero_stops_and_says_so(sft_run, tmp_path, monkeypatch):
    import hlsm.grpo_trainer as trainer  # the module whose rollouts call it

    def nothing(examples, completions, weights, rewards=None):  # every completion scores 0
        zeros = torch.zeros(len(completions))
        return zeros, {name: zeros for name in weights}

    monkeypatch.setattr(trainer, "combined_rewards", nothing)
    result = grpo_train(tiny(sft_run, steps=10, stop_when_dead=3, ckpt_every=0), tmp_path / "dead", progress=False)
    assert result.step == 3
    events = [m["event"] for m in read_metrics(tmp_path / "dead") if "event" in m]
    assert events == ["collapsed: every group tied at reward 0 for 3 steps in a row; stopped at step 3 of 10"]
    assert (tmp_path / "dead" / "policy.pt").exists() and (tmp_path / "dead" / "eval.csv").exists()


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_replay_windows_of_all_ranks_are_the_controls_replay_items(world):
    from hlsm.grpo import replay_window

    for k in range(3):
        items = []
        for rank in range(world):
            start, n = replay_window(k, 8, rank, world)
            items += range(start, start + n)
        assert items == list(range(8 * k, 8 * (k + 1)))  # SFT step k reads items [k * 8, (k + 1) * 8)
    with pytest.raises(ValueError, match="split evenly over 16 ranks"):
        replay_window(0, 8, 0, 16)


def test_labelled_control_refuses_what_it_cannot_mirror(sft_run):
    from hlsm.control import labelled_control

    with pytest.raises(ValueError, match="epochs x minibatches = 4"):
        labelled_control(tiny(sft_run, epochs=2, minibatches=2))
    with pytest.raises(ValueError, match=r"\['lr'\] would change"):
        labelled_control(tiny(sft_run), lr=1e-3)
    split = hlsm.compositional_split(depth=2, skills=SKILLS4, routings=("chain",), deeper=())
    with pytest.raises(ValueError, match="replay_support='rl' is the rl_support"):
        GRPOConfig(replay_support="rl", replay_fraction=0.5).check_split(split)
    with pytest.raises(ValueError, match="eval_supports: 'rl' is not an evaluation support"):
        GRPOConfig(eval_supports=("rl",)).check_split(split)


@pytest.mark.slow
def test_the_smoke_presets_learn_visibly(tmp_path, capsys):
    """What a new user runs first: `python -m hlsm.sft` then `python -m hlsm.grpo`, both at the smoke preset."""
    from hlsm.evaluate import read_csv
    from hlsm.grpo import main as grpo_main
    from hlsm.sft import main as sft_main

    torch.set_num_threads(1)
    assert sft_main(["--out", str(tmp_path / "sft"), "--no-progress", "--device", "cpu"]) == 0
    seen = next(r["answer"] for r in read_csv(tmp_path / "sft" / "eval.csv") if r["support"] == "seen"
                and r["by"] == "all")
    assert seen >= 0.5, seen  # most seen compositions right after about a minute
    assert grpo_main(["--init", str(tmp_path / "sft"), "--out", str(tmp_path / "grpo"), "--no-progress",
                      "--device", "cpu"]) == 0
    rewards = [m["reward_mean"] for m in read_metrics(tmp_path / "grpo") if "reward_mean" in m]
    assert len(rewards) == GRPO_PRESETS["smoke"]["steps"] and sum(rewards) / len(rewards) > 0
    first, last = sum(rewards[:15]) / 15, sum(rewards[-15:]) / 15
    print(f"smoke: SFT seen {seen:.3f}; GRPO reward first 15 steps {first:.3f}, last 15 {last:.3f}")
    assert last > first, (first, last)


# --- dynamic sampling (DAPO): drop tied groups, refill the step; controls follow the kept prompts ----------


def _train_rows(run) -> list[dict]:
    """A run's training records without their timings (what two equal runs share exactly)."""
    timing = {"rollout_s", "update_s", "step_s", "tokens_per_s"}
    return [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(run) if "loss" in m]


@pytest.fixture(scope="module")
def ds_run(sft_run, tmp_path_factory):
    """A finished dynamic-sampling GRPO run (ties decided by prompt, ``_ties_by_prompt``: steps take several
    draws) and its config."""
    cfg = tiny(sft_run, steps=3, rewards={"answer": 1.0}, dynamic_sampling=True, ckpt_every=0)
    out = tmp_path_factory.mktemp("ds") / "grpo"
    with pytest.MonkeyPatch.context() as mp:
        _ties_by_prompt(mp, 4)
        grpo_train(cfg, out, progress=False)
    assert any(m["draws"] > 1 for m in _train_rows(out))
    return cfg, out


def test_draw_zero_is_todays_draw_and_without_dynamic_sampling_nothing_changes(sft_run):
    """Draw 0 of step k keeps the key runs have always sampled step k with; a dynamic-sampling step's kept
    groups from draw 0 are exactly those rows of the plain step's rollout. Off, there is no cursor in the
    checkpoint and no new metric."""
    from hlsm.grpo import GRPO
    from hlsm.names import GRPO_SAMPLING
    from hlsm.rng import stream_key

    cfg = tiny(sft_run, rewards={"answer": 1.0})
    model, split, fmt, gran = load_init(cfg.init)
    plain = GRPO(cfg, model, split, fmt, gran)
    for k in range(3):
        assert plain.generator(k).initial_seed() == stream_key(cfg.seed, GRPO_SAMPLING, k, 0) & (2**63 - 1)
        assert plain.generator(k, 0).initial_seed() == plain.generator(k).initial_seed()
        assert plain.generator(k, 1).initial_seed() != plain.generator(k).initial_seed()
    ds = GRPO(tiny(sft_run, rewards={"answer": 1.0}, dynamic_sampling=True, max_draws=1), load_init(cfg.init)[0],
              split, fmt, gran)
    a, b = plain.rollout(0), ds.rollout(0)
    assert a.items == [0, 1, 2, 3] and set(b.items) <= set(a.items) and b.draws == 1
    rows = torch.tensor([4 * i + j for i in b.items for j in range(4)], dtype=torch.long)
    assert torch.equal(a.gen.ids[rows, : b.gen.ids.shape[1]], b.gen.ids) and torch.equal(a.adv[rows], b.adv)
    assert a.drawn == b.drawn  # the rollout statistics are of everything drawn
    metrics = plain.step(0)
    assert "cursor" not in plain.state_dict(1) and not {"draws", "kept_items", "kept_groups"} & set(metrics)


def _ties_by_prompt(monkeypatch, g: int) -> None:
    """Rewards whose ties the prompts decide, on any machine: a group is untied (one of its G completions
    scores 1) when its prompt's CRC32 is 0 mod 4, else all 0. The sampler is machine-independent, so
    which groups a dynamic-sampling step drops is too; the policy's own rewards tie or not with the
    float paths of the machine that trained it."""
    import zlib

    import hlsm.grpo_trainer as trainer

    def rewards(examples, texts, weights):
        untied = [zlib.crc32(ex.prompt.encode()) % 4 == 0 for ex in examples]
        r = torch.tensor([float(u and i % g == 0) for i, u in enumerate(untied)])
        return r, {name: r for name in weights}

    monkeypatch.setattr(trainer, "combined_rewards", rewards)


def test_dynamic_sampling_trains_only_untied_groups_and_logs_what_it_kept(sft_run, tmp_path, monkeypatch):
    """Every group an update sees has reward variance; at most P are kept; each draw takes the next P
    items of the RL stream (the cursor moves by draws * P, and is checkpointed); the logged kept_items
    are exactly the prompts the update used, in its order; a step short of P groups ran out of draws."""
    import hlsm.grpo_trainer as trainer
    from hlsm.grpo_loss import tied_groups
    from hlsm.text import Tokenizer

    seen, real = {}, trainer.GRPO._update

    def spy(self, k, u, ro, *args):
        seen[k] = (ro, self.rl)
        return real(self, k, u, ro, *args)

    monkeypatch.setattr(trainer.GRPO, "_update", spy)
    p, g = 4, 4
    _ties_by_prompt(monkeypatch, g)
    cfg = tiny(sft_run, steps=4, rewards={"answer": 1.0}, dynamic_sampling=True, max_draws=3)
    grpo_train(cfg, tmp_path / "ds", progress=False)
    steps, tok, cursor = _train_rows(tmp_path / "ds"), Tokenizer(), 0
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    for k, m in enumerate(steps):
        ro, rl = seen[k]
        kept = m["kept_items"]
        assert not tied_groups(ro.reward, g).any() and ro.items == kept and m["kept_groups"] == len(kept) <= p
        assert ro.prompts == [tok.encode(rl[i].prompt, bos=True) for i in kept for _ in range(g)]
        assert m["prompts_drawn"] == m["draws"] * p and m["extra_rollouts"] == (m["draws"] - 1) * p * g
        assert kept == sorted(kept) and all(cursor <= i < cursor + m["prompts_drawn"] for i in kept)
        untied = round(m["prompts_drawn"] * (1 - m["zero_std_frac"]))  # zero_std_frac: of every group drawn
        assert len(kept) == min(untied, p) and (len(kept) == p or m["draws"] == cfg.max_draws)
        cursor += m["prompts_drawn"]
    assert any(m["draws"] > 1 for m in steps) and any(m["kept_groups"] < p for m in steps), "nothing was dropped"
    assert torch.load(tmp_path / "ds" / "checkpoint.pt", weights_only=True)["cursor"] == cursor


def test_dynamic_sampling_resumes_bit_identical_after_a_kill(sft_run, tmp_path, monkeypatch):
    """Killed in step 4 of 4 (checkpoint after step 2; step 3 had moved the cursor), resumed: the same
    weights and the same log as a run never killed."""
    import hlsm.grpo_trainer as trainer

    _ties_by_prompt(monkeypatch, 4)  # steps that take several draws on any machine
    cfg = tiny(sft_run, rewards={"answer": 1.0}, dynamic_sampling=True, minibatches=2, epochs=2, beta=0.05)
    whole = grpo_train(cfg, tmp_path / "whole", progress=False)
    real = trainer.GRPO.step

    def killed(self, k):
        if k == 3:
            raise KeyboardInterrupt("killed")
        return real(self, k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer.GRPO, "step", killed)
        with pytest.raises(KeyboardInterrupt):
            grpo_train(cfg, tmp_path / "cut", progress=False)
    assert [m["step"] for m in _train_rows(tmp_path / "cut")] == [1, 2, 3]
    resumed = grpo_train(cfg, tmp_path / "cut", resume=True, progress=False)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert _train_rows(tmp_path / "whole") == _train_rows(tmp_path / "cut")
    assert any(m["draws"] > 1 for m in _train_rows(tmp_path / "whole"))  # the cursor ran ahead of k * P


def test_labelled_control_of_a_dynamic_sampling_run_trains_on_its_kept_items(sft_run, tmp_path, monkeypatch):
    """The control's step k batch is GRPO step k's kept prompts (golden completions, in training order)
    then its replay items; its batch sizes follow the kept counts. It needs the finished run, of this config."""
    import dataclasses

    from hlsm.checkpoint import MetricsLog
    from hlsm.control import labelled_control
    from hlsm.distributed import DistInfo
    from hlsm.grpo import GRPO
    from hlsm.sft import SFTTrainer, encode_examples, make_batch
    from hlsm.text import Tokenizer

    _ties_by_prompt(monkeypatch, 4)
    cfg = tiny(sft_run, steps=3, rewards={"answer": 1.0}, dynamic_sampling=True, replay_fraction=0.5, ckpt_every=0)
    run = tmp_path / "grpo"
    grpo_train(cfg, run, progress=False)
    kept = [m["kept_items"] for m in _train_rows(run)]
    with pytest.raises(ValueError, match="labelled_control: GRPOConfig.dynamic_sampling: give run="):
        labelled_control(cfg)
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        labelled_control(dataclasses.replace(cfg, lr=1e-3), run=run)
    with pytest.raises(ValueError, match="run= is for a dynamic-sampling"):
        labelled_control(tiny(sft_run), run=run)
    with pytest.raises(ValueError, match="would change the items"):
        labelled_control(cfg, run=run, items_from="")
    control = labelled_control(cfg, run=run, log_every=1).validate()
    assert control.items_from == str(run) and control.batch_size == 4 + 2
    model, split, fmt, gran = load_init(cfg.init)
    grpo = GRPO(cfg, model, split, fmt, gran)
    sft = SFTTrainer(control, tmp_path / "c", MetricsLog(tmp_path / "c", enabled=False), DistInfo())
    tok, block = Tokenizer(), model.config.block_size
    for k in range(cfg.steps):
        items = [grpo.rl[i] for i in kept[k]] + grpo.replay_items(k)
        want = make_batch([encode_examples(tok, items)], tok.pad_id, block)
        for a, b in zip(want, sft.batch(k)):
            assert torch.equal(a, b), k
    assert any(len(items) < 4 for items in kept), "every step kept P groups: the test checks little"
    result = sft_train(control, tmp_path / "control", progress=False)
    assert [m["items"] for m in _train_rows(result.out)] == [len(items) + 2 for items in kept]
    with pytest.raises(ValueError, match="SFTConfig.items_from: .* steps=4"):  # one record per step, no more
        dataclasses.replace(control, steps=4).validate()
    with pytest.raises(ValueError, match="SFTConfig.items_from: needs data_offset = 0"):
        dataclasses.replace(control, data_offset=8).validate()
    with pytest.raises(ValueError, match="SFTConfig.items_from: runs in one process only"):
        SFTTrainer(control, tmp_path / "c", MetricsLog(tmp_path / "c", enabled=False), DistInfo(world_size=2))


def test_rft_control_of_a_dynamic_sampling_run_samples_exactly_its_kept_prompts(sft_run, ds_run, tmp_path):
    from hlsm.control import rft_control
    from hlsm.distributed import DistInfo
    from hlsm.grpo import GRPO
    from hlsm.grpo_loss import RFT
    from hlsm.text import Tokenizer

    cfg, run = ds_run
    kept = [m["kept_items"] for m in _train_rows(run)]
    with pytest.raises(ValueError, match="rft_control: GRPOConfig.dynamic_sampling: give run="):
        rft_control(cfg)
    rft = rft_control(cfg, run=run)
    assert (rft.objective, rft.dynamic_sampling, rft.prompts_from) == (RFT, False, str(run))
    model, split, fmt, gran = load_init(cfg.init)
    trainer, tok = GRPO(rft, model, split, fmt, gran), Tokenizer()
    for k in range(cfg.steps):
        ro = trainer.rollout(k)
        assert ro.items == kept[k] and len(ro.reward) == 4 * len(kept[k])
        assert ro.prompts == [tok.encode(trainer.rl[i].prompt, bos=True) for i in kept[k] for _ in range(4)]
    metrics = _train_rows(grpo_train(rft, tmp_path / "rft", progress=False).out)
    assert len(metrics) == cfg.steps and "kept_items" not in metrics[0]
    with pytest.raises(ValueError, match="GRPOConfig.prompts_from: .* steps=4"):
        GRPOConfig(**{**rft.to_dict(), "steps": 4}).validate()
    with pytest.raises(ValueError, match="GRPOConfig.prompts_from: the run it follows has prompts_per_step=4"):
        GRPOConfig(**{**rft.to_dict(), "prompts_per_step": 2}).validate()
    with pytest.raises(ValueError, match="GRPOConfig.prompts_from: runs in one process only"):
        GRPO(rft, model, split, fmt, gran, dist=DistInfo(world_size=2))
    with pytest.raises(ValueError, match="GRPOConfig.dynamic_sampling: runs in one process only"):
        GRPO(cfg, model, split, fmt, gran, dist=DistInfo(world_size=2))


def test_a_dynamic_sampling_step_that_keeps_nothing_trains_nothing_and_its_controls_follow(sft_run, tmp_path,
                                                                                           monkeypatch):
    """Every group tied: each step spends its max_draws and keeps no group, so no weight moves; the
    labelled control's steps hold no item (no update, a NaN loss) and the RFT control samples nothing."""
    import hlsm.grpo_trainer as trainer
    from hlsm.control import labelled_control, rft_control

    def nothing(examples, completions, weights, rewards=None):
        zeros = torch.zeros(len(completions))
        return zeros, {name: zeros for name in weights}

    monkeypatch.setattr(trainer, "combined_rewards", nothing)
    cfg = tiny(sft_run, steps=2, rewards={"answer": 1.0}, dynamic_sampling=True, max_draws=2, stop_when_dead=0)
    run = grpo_train(cfg, tmp_path / "grpo", progress=False)
    steps = _train_rows(run.out)
    assert [(m["kept_items"], m["draws"], m["extra_rollouts"]) for m in steps] == [([], 2, 16)] * 2
    init = load_policy(sft_run)[0].state_dict()
    rft = grpo_train(rft_control(cfg, run=run.out), tmp_path / "rft", progress=False)
    control = sft_train(labelled_control(cfg, run=run.out, log_every=1), tmp_path / "control", progress=False)
    for model in (run.model, rft.model, control.model):
        assert all(torch.equal(p, init[name]) for name, p in model.state_dict().items())
    assert all(m["items"] == 0 and math.isnan(m["loss"]) for m in _train_rows(control.out))


def test_dynamic_sampling_flags_on_the_command_line(sft_run, tmp_path, capsys):
    from hlsm.grpo import main

    with pytest.raises(SystemExit) as e:
        main(["--init", str(sft_run), "--out", str(tmp_path / "x"), "--dynamic-sampling", "--max-draws", "0"])
    assert e.value.code == 2 and "GRPOConfig.max_draws" in capsys.readouterr().err


def test_per_support_formats_reach_grpo_prompts_replay_and_the_control(sft_run):
    """With the base's per-support formats (``SFTConfig.formats``), GRPO renders its RL prompts and its
    replay items as SFT rendered them, and the labelled control still trains on exactly those items."""
    import dataclasses

    from hlsm.control import labelled_control
    from hlsm.grpo import GRPO
    from hlsm.sft import data_streams, encode_examples, local_batch, make_batch, make_split, mix_counts
    from hlsm.text import Tokenizer

    base = dataclasses.replace(SFTConfig.from_dict(read_config(sft_run)), formats={"rl_inside": "answer",
                                                                                    "sft": "explicit/2"})
    cfg = tiny(sft_run, prompts_per_step=4, replay_fraction=0.5, steps=2)
    model, split, fmt, gran = load_init(cfg.init)
    trainer = GRPO(cfg, model, split, fmt, gran, formats=base.formats)
    assert {ex.format for ex in trainer.prompts(0)} == {"answer"}
    assert {(ex.format, ex.granularity) for ex in trainer.replay_items(0)} == {("explicit", 2)}
    control = labelled_control(cfg, base).validate()
    assert control.formats == base.formats
    streams = data_streams(control, make_split(control.split))
    counts = mix_counts(control.train_supports, control.batch_size)
    tok, block = Tokenizer(), model.config.block_size
    for k in range(cfg.steps):
        want = make_batch([encode_examples(tok, trainer.prompts(k) + trainer.replay_items(k))], tok.pad_id, block)
        for a, b in zip(want, local_batch(streams, counts, k, 0, control.batch_size, tok, block)):
            assert torch.equal(a, b), k


def test_grpo_logs_the_form_each_rollout_takes(sft_run, tmp_path):
    """Every step's metrics say which share of its completions wrote each step out (explicit, values),
    in fewer chunks, the answer alone or something else: the shares sum to 1."""
    from hlsm.text import FORMS

    grpo_train(tiny(sft_run, steps=2), tmp_path / "g", progress=False)
    for m in (m for m in read_metrics(tmp_path / "g") if "reward_mean" in m):
        shares = [m[f"form/{f}"] for f in FORMS]
        assert all(0 <= x <= 1 for x in shares) and sum(shares) == pytest.approx(1.0)


def test_grpo_and_its_evaluations_read_the_init_runs_formats(tmp_path):
    """``hlsm.grpo.train`` renders its prompts, and every evaluation its items, in the per-support formats
    of the SFT run it starts from (``run_formats``: a GRPO run reports its init's)."""
    from hlsm.checkpoint import run_formats
    from hlsm.evaluate import eval_items

    formats = {"rl_inside": "answer", "eval_atoms": "explicit", "seen": "answer"}
    sft = SFTConfig.from_preset("smoke", split=SPLIT, fmt="values", formats=formats, steps=4, batch_size=8,
                                eval_supports=("seen", "eval_atoms"), eval_every=0, eval_n=4, ckpt_every=0,
                                device="cpu")
    sft_train(sft, tmp_path / "sft", progress=False)
    grpo_train(tiny(tmp_path / "sft", steps=1), tmp_path / "g", progress=False)
    assert run_formats(tmp_path / "g") == run_formats(tmp_path / "sft") == \
           {"fmt": "values", "granularity": 1, "formats": formats}
    split = load_init(str(tmp_path / "sft"))[1]
    kw = run_formats(tmp_path / "g")
    from hlsm.text import format_kw

    assert {ex.format for ex in eval_items(split, "eval_atoms", 4, 0, **format_kw(kw["formats"], "eval_atoms",
                                                                                   "values", 1))} == {"explicit"}
    m = [m for m in read_metrics(tmp_path / "g") if "reward_mean" in m][0]
    assert m["form/answer"] + m["form/other"] + m["form/values"] + m["form/explicit"] + m["form/chunked"] == \
           pytest.approx(1.0)
