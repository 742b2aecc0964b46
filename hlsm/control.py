"""The controls of a GRPO run: labels, or the policy's own correct samples, on exactly its prompts.

    grpo = GRPOConfig(init="runs/sft", rl_support="rl", steps=100, prompts_per_step=16)
    control = labelled_control(grpo)               # an SFTConfig; train it with hlsm.sft.train
    control = labelled_control(grpo, base=sft_cfg) # before the SFT run exists: from its config
    rft = rft_control(grpo)                        # a GRPOConfig; train it with hlsm.grpo.train
    control = labelled_control(grpo, run="runs/grpo")  # dynamic sampling: after the GRPO run, from its log
    rft = rft_control(grpo, run="runs/grpo")

Every RL claim is read against this run. GRPO step k samples its P prompts from items
[k*P, (k+1)*P) of the stream ``hlsm.names.train_stream(rl_support)`` (and, with replay, n_replay =
round(replay_fraction * P) labelled items [k*n_replay, (k+1)*n_replay) of
``train_stream(replay_support)``); SFT step k reads the same item ranges of the same streams when
its batch holds P items of ``rl_support`` and n_replay of ``replay_support``. So the control sees
the same prompts in the same order, one golden completion each where GRPO sees G scored samples,
for the same number of updates at the same learning rate (constant, after GRPO's warmup), from
the same initial policy. GRPO with several updates per step (epochs x minibatches > 1) has no such
control and is refused. A GRPO run that stopped early (``stop_when_dead``: every group tied at
reward 0) took fewer steps than its control: its metrics say so.

The RFT control (rejection-sampling fine-tuning, on policy) is the same run with one change: the
objective. It draws GRPO's prompts and G samples per prompt from its own policy with the same code
and sampling noise (step k's generator is a function of (seed, k); so from the same weights, as at
step 0, the samples are GRPO's), and trains only on the samples whose answer is right: the mean
NLL over them, no baseline, no negative advantage (``hlsm.grpo_loss.rft_advantages``). Against it
GRPO's gain is what its baseline and negatives add beyond on-policy data.

A GRPO run with dynamic sampling (``GRPOConfig.dynamic_sampling``) chooses its prompts as it goes:
step k trains on the groups whose rewards did not tie, up to P, out of as many draws as it took.
Its controls follow the prompts it kept, known only once it has run: ``run=`` names the finished
run, and the labelled control's step k trains on that run's ``kept_items`` of step k
(``SFTConfig.items_from``; golden completions, batch sizes following the kept counts), the RFT
control's step k samples and scores exactly those prompts (``GRPOConfig.prompts_from``; no dynamic
sampling of its own: RFT learns from all-correct groups, which dynamic sampling would drop). The
RFT control's sampling noise is its own step k's (the kept prompts came from several draws), so
even at step 0 its samples are not the GRPO run's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hlsm.checkpoint import CONFIG, read_config
from hlsm.grpo import RESUME_MAY_CHANGE, GRPOConfig
from hlsm.grpo_loss import RFT
from hlsm.sft import SFTConfig


def checked_run(grpo: GRPOConfig, run, caller: str) -> str:
    """``run`` as a string when ``grpo`` samples dynamically (then it must be ``grpo``'s finished run: its
    config equal but for what a resume may change), else "" (and ``run`` must not be given)."""
    if not grpo.dynamic_sampling:
        if run:
            raise ValueError(f"{caller}: run= is for a dynamic-sampling GRPO config (whose prompts are known only "
                             f"once it has run); this one's step k takes items [k*P, (k+1)*P)")
        return ""
    if not run:
        raise ValueError(f"{caller}: GRPOConfig.dynamic_sampling: give run=, the finished GRPO run whose kept "
                         f"prompts the control follows (they are known only once it has run)")
    if not (Path(run) / CONFIG).exists():
        raise ValueError(f"{caller}: run={str(run)!r} is not a run directory (no {CONFIG})")
    stored, given = read_config(run), grpo.to_dict()
    diff = sorted(k for k in set(stored) | set(given) if k not in RESUME_MAY_CHANGE and stored.get(k) != given.get(k))
    if diff:
        raise ValueError(f"{caller}: run={str(run)!r} is not a run of this GRPO config: it differs in {diff}")
    return str(run)


def labelled_control(grpo: GRPOConfig, base: SFTConfig | None = None, run=None, **overrides) -> SFTConfig:
    """The continued-SFT config that trains on exactly ``grpo``'s prompts (and replay items).

    ``base`` is the SFT config of the run both start from (its split, format and model preset are
    the control's); without it they are read from the SFT run ``grpo.init`` (``grpo.split``, when
    given, wins). ``run`` is ``grpo``'s finished run directory, required when it samples dynamically:
    step k then trains on the prompts it kept at step k (``SFTConfig.items_from``). ``overrides`` set
    fields that do not change which items are seen or how they are learned (e.g. ``eval_n``,
    ``ckpt_every``, ``device``); one that would raises a ValueError.
    """
    follows = ("train_supports", "batch_size", "steps", "seed", "init", "split", "lr", "warmup_steps",
               "min_lr_ratio", "weight_decay", "grad_clip", "data_offset", "items_from")
    bad = sorted(set(overrides) & set(follows))
    if bad:
        raise ValueError(f"labelled_control: {bad} would change the items or updates the control sees; "
                         f"they follow the GRPO config")
    if grpo.epochs * grpo.minibatches != 1:
        raise ValueError(
            f"labelled_control: GRPO takes epochs x minibatches = {grpo.epochs * grpo.minibatches} updates "
            f"per step; the control takes one per step on the same items, so the two would not match"
        )
    p = grpo.prompts_per_step
    n_replay = round(grpo.replay_fraction * p)
    mix = {grpo.rl_support: float(p)}
    if n_replay:
        if grpo.replay_support == grpo.rl_support:
            raise ValueError(f"labelled_control: replay_support = rl_support = {grpo.rl_support!r}; "
                             f"the control cannot tell the two streams apart")
        mix[grpo.replay_support] = float(n_replay)
    items_from = checked_run(grpo, run, "labelled_control")  # "" (the default) without dynamic sampling
    if base is not None:
        start = base.to_dict()
    elif grpo.init:
        start = read_config(grpo.init)
    else:
        raise ValueError("labelled_control: give base= (the GRPO config has no init run to read it from)")
    kw = dict(
        preset=start.get("preset", "smoke"), model=start.get("model", {}), split=start["split"],
        fmt=start.get("fmt", "values"), granularity=start.get("granularity", 1), formats=start.get("formats", {}),
        init=grpo.init, seed=grpo.seed, train_supports=mix, batch_size=p + n_replay, steps=grpo.steps,
        lr=grpo.lr, warmup_steps=grpo.warmup_steps, min_lr_ratio=1.0, weight_decay=grpo.weight_decay,
        grad_clip=grpo.grad_clip, eval_supports=tuple(grpo.eval_supports), eval_every=grpo.eval_every,
        eval_n=grpo.eval_n, ckpt_every=grpo.ckpt_every, device=grpo.device, items_from=items_from,
    )
    if grpo.split is not None:
        kw["split"] = grpo.split
    kw.update(overrides)
    return SFTConfig(**kw)


def rft_control(grpo: GRPOConfig, run=None) -> GRPOConfig:
    """``grpo`` with ``objective="rft"``: the same prompts, sampling code and noise, updates and learning
    rate, trained only on its correct samples. A config that is already RFT is refused (it is not a GRPO
    arm), and so is one RFT cannot mirror (``GRPOConfig.validate``: KL, replay, several updates a step).
    With dynamic sampling give ``run``, ``grpo``'s finished run: the control then samples, at step k, the
    prompts it kept at step k (``prompts_from``) and samples no more dynamically."""
    if grpo.objective == RFT:
        raise ValueError("rft_control: the config is already an RFT run; give the GRPO arm it controls")
    prompts_from = checked_run(grpo, run, "rft_control")
    follow = {"dynamic_sampling": False, "prompts_from": prompts_from} if prompts_from else {}
    return dataclasses.replace(grpo, objective=RFT, **follow).validate()
