"""The labelled control of a GRPO run: continued SFT with labels on exactly the items GRPO trained on.

    grpo = GRPOConfig(init="runs/sft", rl_support="rl", steps=100, prompts_per_step=16)
    control = labelled_control(grpo)               # an SFTConfig; train it with hlsm.sft.train

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
"""

from __future__ import annotations

from hlsm.grpo import GRPOConfig
from hlsm.sft import SFTConfig


def labelled_control(grpo: GRPOConfig, split=None, **overrides) -> SFTConfig:
    """The continued-SFT config that trains on exactly ``grpo``'s prompts (and replay items).

    ``split`` is the split spec both runs draw from: by default ``grpo.split``, else the split of
    the SFT run ``grpo.init``. ``overrides`` set SFTConfig fields that do not change which items
    are seen (e.g. ``eval_n``, ``ckpt_every``, ``device``; ``fmt`` / ``granularity``, which must be
    the init run's); one that would change them raises a ValueError.
    """
    follows = ("train_supports", "batch_size", "steps", "seed", "init", "split", "lr", "warmup_steps",
               "min_lr_ratio", "weight_decay", "grad_clip")
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
    kw = dict(
        init=grpo.init, seed=grpo.seed, train_supports=mix, batch_size=p + n_replay, steps=grpo.steps,
        lr=grpo.lr, warmup_steps=grpo.warmup_steps, min_lr_ratio=1.0, weight_decay=grpo.weight_decay,
        grad_clip=grpo.grad_clip, eval_supports=tuple(grpo.eval_supports), eval_every=grpo.eval_every,
        eval_n=grpo.eval_n, ckpt_every=grpo.ckpt_every, device=grpo.device,
    )
    split = split if split is not None else grpo.split
    if split is None:
        if not grpo.init:
            raise ValueError("labelled_control: give split= (the GRPO config has neither split nor init)")
        from hlsm.checkpoint import read_config

        init = read_config(grpo.init)
        split = init["split"]
        kw.update(fmt=init.get("fmt", "values"), granularity=init.get("granularity", 1))
    kw["split"] = split
    kw.update(overrides)
    return SFTConfig(**kw)
