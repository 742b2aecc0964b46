"""GRPO on the HLSM: group-relative policy optimization from an SFT checkpoint.

Each step draws P prompts from an RL support (step k uses items [k*P, (k+1)*P) of the stream
``hlsm.names.train_stream(rl_support)``, the one SFT on that support reads as well), samples G
completions per prompt at the sampling temperature, scores them with named, weighted rewards from
``hlsm.text.REWARDS``, turns rewards into group-relative advantages and takes ``epochs x
minibatches`` clipped policy-gradient updates, with an optional k3 KL to a frozen reference and an
optional replay NLL term on labelled SFT data.

The math is a set of small pure functions in ``hlsm.grpo_loss`` (each tested on hand-computed
values; re-exported here): group advantages, masked means and the three loss aggregations, the
clipped surrogate, the k3 KL, combined rewards and the replay window.

The trainer (``GRPO``, ``train``) keeps dropout off, caches old log-probs (no grad, sampling
temperature) only when a rollout gets more than one update, loads a frozen reference only when
beta > 0, and back-propagates only what has a gradient: each micro-batch is cut to its longest
completion, and (without KL) rows of zero advantage are left out while the loss aggregation still
counts them. Step k's randomness is a pure function of (seed, k): resuming from a checkpoint
(weights + optimizer) is bit-identical on CPU. A NaN/inf loss stops the run before the update
(``NonFiniteLossError`` names the step and the last good checkpoint).

CLI: ``python -m hlsm.grpo --init runs/sft --out runs/grpo [--preset cpu] [--steps N] ...``
(every ``GRPOConfig`` field is a flag; dicts and tuples as JSON; ``--resume`` continues a run);
under ``torchrun`` it runs data-parallel (DDP, gloo on CPU), each rank sampling P / world prompts
with its rows of the global batch's sampling noise, so N ranks end where 1 process ends (to float
tolerance; replay matches when replay_fraction * P splits evenly over the ranks).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hlsm.checkpoint import (
    CONFIG,
    MetricsLog,
    NonFiniteLossError,
    init_run,
    load_checkpoint,
    load_policy,
    read_config,
    same_eval,
    save_policy,
    start_step,
)
from hlsm.cli import build_config, given_config, trainer_parser
from hlsm.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
    shard,
    wrap_ddp,
)
from hlsm.grpo_loss import (  # noqa: F401 -- the math, re-exported: hlsm.grpo.compute_group_advantages, ...
    LOSS_AGGREGATIONS,
    aggregate_loss,
    clipped_policy_loss,
    combined_rewards,
    compute_group_advantages,
    k3_kl,
    masked_mean,
    replay_window,
)
from hlsm.model import HLSM
from hlsm.names import GRPO_SAMPLING, RL, RL_PROMPTS, SEEN, SFT, UNSEEN, train_stream
from hlsm.policy import Generation, completion_logprobs, generate
from hlsm.rng import stream_key
from hlsm.runloop import Loop, eval_line, run_loop
from hlsm.text import Tokenizer

# --- configuration --------------------------------------------------------------------------


@dataclass
class GRPOConfig:
    """Every knob of a GRPO run; ``validate`` checks them all up front (ValueError naming the field)."""

    init: str = ""  # SFT run directory to start from (policy weights, model config, split, format)
    split: dict | None = None  # a hlsm.support.make_split spec; None: the init run's split
    seed: int = 0  # seeds the RL prompt stream, the sampling generators and the replay stream
    steps: int = 200  # RL steps; step k draws RL prompts [k*P, (k+1)*P) and samples G each
    prompts_per_step: int = 16  # P: prompts per step, all ranks together (divisible by world size)
    group_size: int = 8  # G: completions sampled per prompt (>= 2: advantages are group-relative)
    rollout_batch_size: int | None = None  # completions per step; optional cross-check, must be P * G
    micro_batch_size: int = 64  # completions per forward/backward (gradient accumulation inside an update)
    epochs: int = 1  # passes over each rollout batch
    minibatches: int = 1  # optimizer updates per pass; row n of the rollout batch goes to minibatch n % this
    lr: float = 1e-4  # AdamW learning rate (constant after warmup)
    warmup_steps: int = 0  # linear learning-rate warmup, in optimizer updates
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max global grad norm per update (0: no clipping; the norm is logged anyway)
    temperature: float = 1.0  # sampling temperature; old/ref log-probs and ratios are taken at it too
    top_k: int = 0  # sample from the top k tokens only (0: the full distribution)
    max_new_tokens: int = 0  # completion length cap (0: the policy's context minus the longest prompt)
    scale_std: bool = True  # divide group-centred rewards by the group std (off: Dr. GRPO)
    loss_agg: str = "seq_mean"  # seq_mean | token_mean | constant (Dr. GRPO: sum / max_new_tokens)
    eps_low: float = 0.2  # clip ratios below 1 - eps_low (negative advantages)
    eps_high: float = 0.2  # clip ratios above 1 + eps_high (positive advantages; DAPO: 0.28)
    beta: float = 0.0  # weight of the k3 KL to the frozen initial policy; 0 loads no reference at all
    rewards: dict = field(default_factory=lambda: {"answer": 1.0})  # name in hlsm.text.REWARDS -> weight
    rl_support: str = RL  # the split's training support the RL prompts come from
    replay_fraction: float = 0.0  # labelled SFT sequences per step, as a fraction of P (NLL term)
    replay_support: str = SFT  # the split's training support replay sequences come from
    replay_coef: float = 1.0  # weight of the replay NLL term in the loss
    eval_supports: tuple = (SEEN, RL_PROMPTS, UNSEEN)  # the split's evaluation supports to score
    eval_every: int = 50  # evaluate every this many steps (and at the end); 0: only at the end
    eval_n: int = 256  # items per eval support (greedy decoding, exact-answer accuracy)
    ckpt_every: int = 50  # checkpoint every this many steps (and at the end)
    log_every: int = 1  # write metrics.jsonl every this many steps
    stop_when_dead: int = 5  # stop after this many steps in a row whose groups all tied at reward 0 (0: never)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GRPOConfig:
        if name not in GRPO_PRESETS:
            raise ValueError(f"GRPOConfig preset: unknown {name!r}; allowed: {', '.join(GRPO_PRESETS)}")
        return cls(**{**GRPO_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def check_split(self, split) -> None:
        """The named supports exist in ``split`` and hold examples (ValueError naming the field).

        RL prompts and replay data must come from training supports: GRPO never trains on an
        evaluation support (whose items the figures score as held out).
        """
        train = [("rl_support", self.rl_support)]
        if self.replay_fraction > 0:
            train.append(("replay_support", self.replay_support))
        for field_name, name in train:
            _stream(split, name, field_name, self.seed, "values", 1)
        if self.replay_fraction > 0 and self.replay_support == self.rl_support:
            raise ValueError(f"GRPOConfig.replay_support={self.replay_support!r} is the rl_support: replay would "
                             f"re-show earlier RL prompts; choose another training support")
        for name in self.eval_supports:
            if name not in split.eval:
                raise ValueError(f"GRPOConfig.eval_supports: {name!r} is not an evaluation support of split "
                                 f"{split.name!r} (have {sorted(split.eval)})")
            try:
                HLSM(support=split.eval[name], seed=self.seed)
            except ValueError as e:
                raise ValueError(f"GRPOConfig.eval_supports={name!r}: {e}") from None

    def validate(self) -> GRPOConfig:
        from hlsm.text import REWARDS

        def bad(name, why):
            raise ValueError(f"GRPOConfig.{name}: {why}, got {getattr(self, name)!r}")

        for name in ("steps", "prompts_per_step", "micro_batch_size", "epochs", "minibatches", "eval_n"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            bad("group_size", "must be an integer >= 2 (advantages are relative to the group)")
        n = self.prompts_per_step * self.group_size
        if self.rollout_batch_size is not None and self.rollout_batch_size != n:
            bad("rollout_batch_size", f"must equal prompts_per_step * group_size = {n}")
        if n % self.minibatches:
            bad("minibatches", f"must divide the rollout batch of P * G = {n} completions")
        for name in ("warmup_steps", "eval_every", "ckpt_every", "max_new_tokens", "top_k", "stop_when_dead"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if self.log_every < 1:
            bad("log_every", "must be >= 1")
        for name in ("lr", "weight_decay", "grad_clip", "beta", "eps_low", "eps_high", "replay_coef"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if self.lr == 0:
            bad("lr", "must be > 0")
        if self.eps_low >= 1:
            bad("eps_low", "must be < 1 (the lower clip bound is 1 - eps_low)")
        if not self.temperature > 0:
            bad("temperature", "must be > 0")
        if not 0 <= self.replay_fraction <= 16:
            bad("replay_fraction", "must be in [0, 16]")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            bad("loss_agg", f"must be one of {', '.join(LOSS_AGGREGATIONS)}")
        if not isinstance(self.rewards, dict) or not self.rewards:
            bad("rewards", "must be a non-empty dict {reward name: weight}")
        for name, w in self.rewards.items():
            if name not in REWARDS:
                bad("rewards", f"unknown reward {name!r} (allowed: {', '.join(sorted(REWARDS))})")
            if not isinstance(w, (int, float)) or not math.isfinite(w):
                bad("rewards", f"weight of {name!r} must be a finite number")
        return self


# --- the trainer ----------------------------------------------------------------------------


def _stream(split, name: str, field_name: str, seed: int, fmt: str, granularity: int) -> HLSM:
    """The stream GRPO draws training support ``name`` from (``hlsm.names.train_stream``, the one SFT
    uses too). An evaluation support, or one without examples, is a ValueError naming the field."""
    if name not in split.train:
        raise ValueError(
            f"GRPOConfig.{field_name}={name!r} is not a training support of split {split.name!r} "
            f"(training supports: {', '.join(sorted(split.train))}); GRPO never trains on evaluation supports"
        )
    try:
        return HLSM(support=split.train[name], seed=seed, fmt=fmt, granularity=granularity,
                    stream=train_stream(name))
    except ValueError as e:
        raise ValueError(f"GRPOConfig.{field_name}={name!r}: {e}") from None


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]


SUMMED = ("clip_low", "clip_high", "kl", "tokens", "logp_mismatch", "first_tokens", "trained")
STATS = (*SUMMED, "loss", "grad_norm", "replay_nll", "ratio_dev")


@dataclass
class Rollout:
    """One step's sampled completions on this rank; row n belongs to prompt n // G."""

    prompts: list  # per row: its prompt's token ids
    gen: Generation  # the B * G completions (ids, mask, sampler log-probs, lengths, texts)
    reward: torch.Tensor  # (B * G,) combined reward
    per: dict  # reward name -> (B * G,) values
    adv: torch.Tensor  # (B * G,) group-relative advantages


class GRPO:
    """One GRPO run's state: the policy (DDP-wrapped under torchrun), optimizer, reference, streams.

    ``GRPO(cfg, model, split).step(k)`` runs RL step k (rollout, rewards, advantages, updates) and
    returns its metrics. Every random draw of step k is a pure function of (seed, k) and dropout
    is off, so the state to resume from is the model and the optimizer alone.
    """

    def __init__(self, cfg: GRPOConfig, model, split, fmt: str = "values", granularity: int = 1,
                 dist: DistInfo | None = None, tokenizer: Tokenizer | None = None):
        self.cfg = cfg.validate()
        self.dist = dist or DistInfo()
        self.tok = tokenizer or Tokenizer()
        self.split, self.fmt, self.granularity = split, fmt, granularity
        world = self.dist.world_size
        if cfg.prompts_per_step % world:
            raise ValueError(
                f"GRPOConfig.prompts_per_step={cfg.prompts_per_step} must divide over {world} ranks"
            )
        self.lo, self.hi = shard(cfg.prompts_per_step, self.dist)
        self.n = (self.hi - self.lo) * cfg.group_size  # completions per step on this rank
        if self.n % cfg.minibatches:
            raise ValueError(
                f"GRPOConfig.minibatches={cfg.minibatches} must divide the {self.n} completions per rank"
            )
        self.rl = _stream(split, cfg.rl_support, "rl_support", cfg.seed, fmt, granularity)
        # replay items per step, all ranks together (as the labelled control counts them), split evenly
        self.n_replay_global = round(cfg.replay_fraction * cfg.prompts_per_step)
        self.n_replay = replay_window(0, self.n_replay_global, self.dist.rank, world)[1]
        self.replay = None
        if self.n_replay:
            self.replay = _stream(split, cfg.replay_support, "replay_support", cfg.seed, fmt, granularity)
        # dropout stays off during RL (as TRL's disable_dropout): the ratio of one pass is exactly 1,
        # and no global RNG is drawn from, so a step is a pure function of (weights, optimizer, k)
        self.model = model.to(self.dist.device).eval()
        self.ddp = wrap_ddp(self.model, self.dist)
        self.ref = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.beta > 0 else None
        self.opt = self.model.configure_optimizer(cfg.lr, cfg.weight_decay)
        sup = self.rl.support
        longest_prompt = max(sup.input_len) + 3 * max(sup.depths) + 2  # <bos> x | R S (space R S)* >
        block = self.model.config.block_size
        self.max_new = cfg.max_new_tokens or block - longest_prompt
        if self.max_new < 1 or longest_prompt + self.max_new > block:
            raise ValueError(
                f"GRPOConfig.max_new_tokens={cfg.max_new_tokens}: prompts of up to {longest_prompt} tokens "
                f"plus completions must fit the policy's block_size={block}"
            )

    # --- state --------------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.opt.state_dict(),
            "step": step,
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict) -> int:
        """Restore model and optimizer; returns the number of steps already done."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        return int(state["step"])

    # --- one step -----------------------------------------------------------------------------

    def generator(self, k: int) -> torch.Generator:
        """The sampling generator of step k, the same on every rank: a pure function of (seed, k).

        Each rank draws the noise of the whole global batch and uses its own rows of it, so a run
        samples the same completions on any number of ranks (the trailing 0 keeps the key of the
        single-process runs made before ranks shared it).
        """
        key = stream_key(self.cfg.seed, GRPO_SAMPLING, k, 0) & (2**63 - 1)
        return torch.Generator().manual_seed(key)

    def prompts(self, k: int) -> list:
        """This rank's RL items of step k: items [k*P + lo, k*P + hi) of the RL support's stream."""
        return self.rl.sample(self.hi - self.lo, start=k * self.cfg.prompts_per_step + self.lo)

    def replay_items(self, k: int) -> list:
        """This rank's labelled replay items of step k (none without replay)."""
        if not self.replay:
            return []
        start, n = replay_window(k, self.n_replay_global, self.dist.rank, self.dist.world_size)
        return self.replay.sample(n, start=start)

    def rollout(self, k: int) -> Rollout:
        """Step k's prompts, G sampled completions each, their rewards and advantages."""
        cfg, tok = self.cfg, self.tok
        examples = self.prompts(k)
        prompts = [tok.encode(ex.prompt, bos=True) for ex in examples]
        gen = generate(
            self.model, prompts, self.max_new, cfg.temperature, cfg.top_k or None, tok.eos_id, tok.pad_id,
            cfg.group_size, self.generator(k), tok,
            rows=(self.lo * cfg.group_size, cfg.prompts_per_step * cfg.group_size),  # this rank's share
        )
        group_ex = [ex for ex in examples for _ in range(cfg.group_size)]
        reward, per = combined_rewards(group_ex, gen.texts, cfg.rewards)
        adv = compute_group_advantages(reward, cfg.group_size, cfg.scale_std).to(self.dist.device)
        return Rollout([prompts[i // cfg.group_size] for i in range(self.n)], gen, reward, per, adv)

    def _replay_batch(self, k: int):
        if not self.replay:
            return None
        exs = self.replay_items(k)
        ids, mask = _right_pad([self.tok.encode(ex.completion, eos=True) for ex in exs], self.tok.pad_id)
        dev = self.dist.device
        return [self.tok.encode(ex.prompt, bos=True) for ex in exs], ids.to(dev), mask.to(dev)

    def _lr(self, update: int) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, (update + 1) / w) if w else self.cfg.lr

    def plan(self, adv: torch.Tensor, lengths: torch.Tensor) -> list[list[torch.Tensor]]:
        """Row indices of each minibatch's micro-batches, rows sorted by completion length.

        Minibatch j holds the rows n with n % minibatches == j: every rank's share of it is the
        same size, and the global minibatch does not depend on the number of ranks. Each micro-batch
        is later cut to its longest row, so short completions carry little padding. Without a KL
        term a zero-advantage row has exactly zero gradient (-min(r 0, clip(r) 0) = 0) and is left
        out; the loss aggregation still counts it, so the update is unchanged. A minibatch keeps at
        least one row: every rank must take part in DDP's gradient all-reduce.
        """
        out = []
        for j in range(self.cfg.minibatches):
            rows = torch.arange(j, self.n, self.cfg.minibatches, device=adv.device)
            if self.ref is None:
                live = rows[adv[rows] != 0]
                rows = live if len(live) else rows[:1]
            rows = rows[torch.argsort(lengths[rows], stable=True)]
            out.append(list(rows.split(self.cfg.micro_batch_size)))
        return out

    def step(self, k: int) -> dict:
        """RL step k (0-based): rollout, then epochs x minibatches updates. Returns global metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        ro = self.rollout(k)
        t1 = time.perf_counter()
        plan = self.plan(ro.adv, ro.gen.lengths)
        # old log-probs matter only when the policy moves between updates of one rollout; they are
        # computed on the same micro-batches as the updates, so the first update's ratio is exactly 1
        updates = cfg.epochs * cfg.minibatches
        with torch.no_grad():
            old = self._cached(self.model, ro, plan) if updates > 1 else None
            ref = self._cached(self.ref, ro, plan) if self.ref else None
        replay = self._replay_batch(k)
        stats = dict.fromkeys(STATS, 0.0)
        for u in range(updates):
            lr = self._lr(k * updates + u)
            j = u % cfg.minibatches
            self._update(k, u, ro, plan[j], old and old[j], ref and ref[j], replay, lr, stats)
        t2 = time.perf_counter()
        return self._metrics(k, ro, stats, lr, t1 - t0, t2 - t1)

    def logprobs(self, model, ro: Rollout, rows: torch.Tensor):
        """(log-probs, mask) of rollout rows ``rows``, cut to their longest completion."""
        width = int(ro.gen.lengths[rows].max())
        ids, mask = ro.gen.ids[rows, :width], ro.gen.mask[rows, :width]
        prompts = [ro.prompts[i] for i in rows.tolist()]
        lp, _ = completion_logprobs(model, prompts, ids, mask, self.cfg.temperature, False, self.tok.pad_id)
        return lp, mask

    def _cached(self, model, ro: Rollout, plan) -> list[list[torch.Tensor]]:
        return [[self.logprobs(model, ro, rows)[0] for rows in micro] for micro in plan]

    def _update(self, k, u, ro: Rollout, micro, old, ref, replay, lr: float, stats: dict) -> None:
        """Optimizer update u of step k over one minibatch (its micro-batches ``micro``)."""
        cfg = self.cfg
        mb = self.n // cfg.minibatches
        j = u % cfg.minibatches
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        local_tok = ro.gen.mask[j :: cfg.minibatches].sum()
        stats["tokens"] += local_tok.item()
        # DDP averages gradients over ranks: token_mean divides by the global token count
        n_tok = all_reduce_sum(local_tok, self.dist).clamp(min=1) / self.dist.world_size
        loss_total = self._replay_backward(replay, stats, cfg.epochs * cfg.minibatches)
        for i, rows in enumerate(micro):
            with self._no_sync(i < len(micro) - 1):
                lp, m = self.logprobs(self.ddp, ro, rows)
                per_tok, meta = clipped_policy_loss(
                    lp, old[i] if old else lp.detach(), ro.adv[rows], cfg.eps_low, cfg.eps_high
                )
                if ref is not None:
                    kl = k3_kl(lp, ref[i])
                    per_tok = per_tok + cfg.beta * kl
                    stats["kl"] += (kl.detach() * m).sum().item()
                share = m.sum() / n_tok if cfg.loss_agg == "token_mean" else len(rows) / mb
                loss = aggregate_loss(per_tok, m, cfg.loss_agg, self.max_new) * share
                loss.backward()
            loss_total += loss.item()
            stats["clip_low"] += (meta["clip_low"] & m).sum().item()
            stats["clip_high"] += (meta["clip_high"] & m).sum().item()
            if u < cfg.minibatches:  # tokens with a gradient (not a rank's zero-advantage placeholder row)
                stats["trained"] += (m & (ro.adv[rows] != 0)[:, None]).sum().item()
            if u == 0:
                stats["first_tokens"] += m.sum().item()
                stats["ratio_dev"] = max(stats["ratio_dev"], ((meta["ratio"] - 1).abs() * m).max().item())
                sampled = ro.gen.logprobs[rows, : m.shape[1]]
                stats["logp_mismatch"] += ((lp.detach() - sampled).abs() * m).sum().item()
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or float("inf"))
        bad = torch.tensor(float(not math.isfinite(loss_total)), device=self.dist.device)
        if all_reduce_sum(bad, self.dist).item() or not torch.isfinite(gn):
            raise NonFiniteLossError(k + 1, loss_total if math.isfinite(loss_total) else float(gn), None)
        self.opt.step()
        stats["loss"] += loss_total / (cfg.epochs * cfg.minibatches)
        stats["grad_norm"] += gn.item() / (cfg.epochs * cfg.minibatches)

    def _replay_backward(self, replay, stats: dict, updates: int) -> float:
        """Backward of the replay NLL term (gradients accumulate, not yet synced); its loss value."""
        if replay is None:
            return 0.0
        prompts, ids, mask = replay
        with self._no_sync(True):
            lp, _ = completion_logprobs(self.ddp, prompts, ids, mask, 1.0, False, self.tok.pad_id)
            # token mean over all ranks' replay tokens (DDP averages gradients over ranks)
            n_tok = all_reduce_sum(mask.sum(), self.dist).clamp(min=1) / self.dist.world_size
            nll = -(lp * mask.to(lp.dtype)).sum() / n_tok
            (self.cfg.replay_coef * nll).backward()
        stats["replay_nll"] += nll.item() / updates
        return self.cfg.replay_coef * nll.item()

    def _no_sync(self, skip: bool):
        return self.ddp.no_sync() if skip and self.dist.enabled else contextlib.nullcontext()

    def _metrics(self, k, ro: Rollout, stats, lr, rollout_s, update_s) -> dict:
        """Global (all-rank) means of the step's statistics."""
        gen, reward, per = ro.gen, ro.reward, ro.per
        groups = reward.view(-1, self.cfg.group_size)
        local = {
            "n": float(self.n),
            "groups": float(groups.shape[0]),
            "reward": reward.sum().item(),
            "reward_sq": (reward**2).sum().item(),
            "zero_std": (groups.max(1).values == groups.min(1).values).sum().item(),
            "len": gen.lengths.sum().item(),
            "truncated": (~gen.finished).sum().item(),
            "neg_logp": -(gen.logprobs * gen.mask).sum().item(),
            **{f"r/{name}": v.sum().item() for name, v in per.items()},
            **{key: stats[key] for key in SUMMED},
        }
        vec = torch.tensor(list(local.values()), dtype=torch.float64, device=self.dist.device)
        vec = all_reduce_sum(vec, self.dist)
        tot = dict(zip(local, vec.tolist()))
        n, tokens, first = tot["n"], max(tot["tokens"], 1.0), max(tot["first_tokens"], 1.0)
        mean = tot["reward"] / n
        out = {
            "step": k + 1,
            "reward_mean": mean,
            "reward_std": math.sqrt(max(tot["reward_sq"] / n - mean**2, 0.0)),
            **{f"reward/{name}": tot[f"r/{name}"] / n for name in per},
            "zero_std_frac": tot["zero_std"] / tot["groups"],  # groups whose G rewards are all equal
            "completion_len": tot["len"] / n,  # tokens, <eos> included
            "truncated_frac": tot["truncated"] / n,  # completions cut at max_new_tokens
            "entropy": tot["neg_logp"] / max(tot["len"], 1.0),  # Monte Carlo: mean -log p of sampled tokens
            "clip_low": tot["clip_low"] / tokens,  # fraction of completion tokens, over all updates
            "clip_high": tot["clip_high"] / tokens,
            "ratio_dev_first": stats["ratio_dev"],  # max |ratio - 1| in the first update (rank 0): 0 exactly
            "logp_mismatch": tot["logp_mismatch"] / first,  # mean |sampler - trainer log-prob|, first update
            "trained_frac": tot["trained"] / max(tot["len"], 1.0),  # tokens back-propagated (advantage != 0)
            "loss": stats["loss"],
            "grad_norm": stats["grad_norm"],  # before clipping, mean over the step's updates
            "lr": lr,
            "rollout_s": rollout_s,
            "update_s": update_s,
            "step_s": rollout_s + update_s,
            "tokens_per_s": tot["len"] / max(rollout_s, 1e-9),  # sampled tokens per second of rollout
        }
        if self.ref is not None:
            out["kl"] = tot["kl"] / tokens
        if self.replay is not None:
            out["replay_nll"] = stats["replay_nll"]
        return out


@torch.no_grad()
def sampled_reward(model, examples, rewards: dict[str, float], samples: int = 8, temperature: float = 1.0,
                   seed: int = 0, max_new_tokens: int | None = None, batch_size: int = 64,
                   tokenizer: Tokenizer | None = None) -> dict:
    """Mean reward of ``samples`` sampled completions per example: what GRPO maximizes, and whether
    GRPO could learn from it (the regime check: p0 strictly between 0 and 1).

    Returns {"reward": mean combined reward, "reward/<name>": mean of each reward function,
    "zero_std_frac": fraction of examples whose ``samples`` rewards are all equal (a GRPO group
    with no signal), "all_zero_frac" / "all_max_frac": of those, all at the lowest / highest
    reward seen (0 / 1 for the answer reward)}.
    """
    tok = tokenizer or Tokenizer()
    gen = torch.Generator().manual_seed(seed)
    total, per, n = 0.0, dict.fromkeys(rewards, 0.0), 0
    tied = all_zero = all_max = 0
    top = sum(w for w in rewards.values() if w > 0)
    block = model.config.block_size
    for lo in range(0, len(examples), batch_size):
        chunk = examples[lo : lo + batch_size]
        prompts = [tok.encode(ex.prompt, bos=True) for ex in chunk]
        m = max_new_tokens or block - max(len(p) for p in prompts)
        out = generate(model, prompts, m, temperature, None, tok.eos_id, tok.pad_id, samples, gen, tok)
        r, parts = combined_rewards([ex for ex in chunk for _ in range(samples)], out.texts, rewards)
        total, n = total + r.sum().item(), n + len(r)
        for name, v in parts.items():
            per[name] += v.sum().item()
        g = r.view(-1, samples)
        same = g.amax(1) == g.amin(1)
        tied += same.sum().item()
        all_zero += (same & (g[:, 0] == 0)).sum().item()
        all_max += (same & (g[:, 0] == top)).sum().item()
    groups = max(n // samples, 1)
    return {"reward": total / n, **{f"reward/{k}": v / n for k, v in per.items()},
            "zero_std_frac": tied / groups, "all_zero_frac": all_zero / groups, "all_max_frac": all_max / groups}


# --- a run ----------------------------------------------------------------------------------

# Training defaults per preset (the policy and its shape come from the --init SFT run).
GRPO_PRESETS = {
    # seconds from the smoke SFT base, whose RL prompts it solves ~30% of: reward visibly above 0
    "smoke": dict(steps=60, prompts_per_step=16, group_size=8, lr=1e-4, eval_every=30, eval_n=128,
                  ckpt_every=30),
    "cpu": dict(steps=300, prompts_per_step=32, group_size=8, lr=1e-4, eval_every=50, eval_n=256,
                ckpt_every=50),
    "paper": dict(steps=2000, prompts_per_step=128, group_size=16, micro_batch_size=256, lr=5e-5,
                  eval_every=200, eval_n=1024, ckpt_every=200),
}
# Keys that may change when resuming (they do not change the trajectory of the steps already run).
RESUME_MAY_CHANGE = ("steps", "device", "eval_every", "eval_n", "eval_supports", "ckpt_every", "log_every")


def load_init(run, device="cpu"):
    """(policy, split, fmt, granularity) of an SFT run directory (its policy.pt and config.json)."""
    from hlsm.sft import make_split

    if not run or not (Path(run) / CONFIG).exists():
        raise ValueError(f"GRPOConfig.init: {run!r} is not an SFT run directory (no {CONFIG})")
    model, _ = load_policy(run, device)
    sft = read_config(run)
    return model, make_split(sft["split"]), sft.get("fmt", "values"), sft.get("granularity", 1)


@dataclass
class GRPOResult:
    model: object  # the trained policy (eval mode)
    step: int  # RL steps done
    metrics: dict  # the last step's metrics
    rows: list  # final evaluation table (hlsm.evaluate rows)
    out: Path  # run directory


def _reward_head(m: dict) -> str:
    return f"reward {m['reward_mean']:.3f} " if m else ""


def run_split(cfg: GRPOConfig):
    """The split a GRPO run trains on: ``cfg.split`` if given (checked for leakage: a LeakageError, a
    ValueError, if an evaluation item could occur in training), else its init run's."""
    from hlsm.sft import make_split

    if cfg.split is None:
        return make_split(read_config(cfg.init)["split"])
    split = make_split(cfg.split)
    split.check_disjoint()
    return split


def train(cfg: GRPOConfig, out, resume: bool = False, progress: bool = True,
          snapshot_every: int = 0) -> GRPOResult:
    """Run (or with ``resume``, continue) GRPO from the SFT run ``cfg.init`` into ``out``.

    ``snapshot_every`` > 0 also keeps the policy at step 0 and every that many steps under
    ``out/snapshots/`` (not part of the config: it does not change the run).
    """
    from tqdm import tqdm

    from hlsm.evaluate import evaluate, read_csv, write_csv

    cfg.validate()
    dist = init_distributed(cfg.device)
    main, out = dist.is_main, Path(out)
    try:
        model, _, fmt, gran = load_init(cfg.init, dist.device)
        split = run_split(cfg)
        cfg.check_split(split)
        trainer = GRPO(cfg, model, split, fmt, gran, dist)
        if main:
            init_run(out, cfg.to_dict(), resume=resume, ignore=RESUME_MAY_CHANGE)
        barrier(dist)
        log = MetricsLog(out, enabled=main)
        ckpt = start_step(out, resume, log, main)
        start = trainer.load_state_dict(load_checkpoint(ckpt, dist.device)) if ckpt else 0
        log.truncate(start)

        def evaluate_fn(step: int, metrics: dict, final: bool = False) -> list:
            rows = []
            if main:
                rows = evaluate(trainer.model, split, cfg.eval_supports, n=cfg.eval_n, seed=cfg.seed, fmt=fmt,
                                granularity=gran, by=("all", "module") if final or step == 0 else ("all",))
                values, line = eval_line(rows, step, _reward_head(metrics))
                log.log({"step": step, **values})
                if progress:
                    tqdm.write(line)
                if final or step == 0:
                    write_csv(rows, out / ("eval.csv" if final else "eval_init.csv"))
            barrier(dist)
            return rows

        dead = [0]

        def stop_fn(m: dict) -> str | None:
            """A policy whose every group is tied at reward 0 gets no gradient: stop instead of idling."""
            dead[0] = dead[0] + 1 if m["zero_std_frac"] == 1.0 and m["reward_mean"] == 0.0 else 0
            if cfg.stop_when_dead and dead[0] >= cfg.stop_when_dead:
                return (f"collapsed: every group tied at reward 0 for {dead[0]} steps in a row; "
                        f"stopped at step {m['step']} of {cfg.steps}")
            return None

        if start == 0:
            evaluate_fn(0, {})  # the base policy: p0 per support and per module before RL
        loop = Loop(out, cfg.steps, start, log, dist, cfg.eval_every, cfg.ckpt_every, cfg.log_every,
                    snapshot_every, progress, "grpo", ("reward_mean", "zero_std_frac"), last_good=ckpt)
        done, metrics, rows = run_loop(loop, trainer.model, trainer.step, evaluate_fn, trainer.state_dict, stop_fn)
        if start >= cfg.steps:  # resumed a finished run: report it; evaluate again only if asked differently
            metrics = next((m for m in reversed(log.read()) if "reward_mean" in m), {})
            if same_eval(out, cfg.to_dict()):
                rows = read_csv(out / "eval.csv") if main else []
            else:
                rows = evaluate_fn(cfg.steps, metrics, final=True)
        if main:
            save_policy(out, trainer.model, {"step": done, "config": cfg.to_dict()})
        barrier(dist)
    finally:
        cleanup(dist)
    return GRPOResult(trainer.model, done, metrics, rows, out)


# --- command line ---------------------------------------------------------------------------


def main(argv=None) -> int:
    p = trainer_parser("python -m hlsm.grpo", __doc__, GRPOConfig, GRPO_PRESETS,
                       choices={"loss_agg": LOSS_AGGREGATIONS}, skip=("preset",))
    p.add_argument("--preset", default="smoke", choices=sorted(GRPO_PRESETS),
                   help="training defaults (default 'smoke': from the smoke SFT base in seconds)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    given = given_config(args, GRPOConfig)
    cfg = build_config(p, lambda: GRPOConfig.from_preset(args.preset, **given), args.out, args.resume,
                       init_required=True, check=lambda c: c.check_split(run_split(c)))
    try:
        result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except (NonFiniteLossError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        _, line = eval_line(result.rows, result.step, _reward_head(result.metrics))
        print(f"done: {line} -> {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
