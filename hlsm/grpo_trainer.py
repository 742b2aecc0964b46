"""The GRPO trainer: one RL step is a rollout (P prompts x G sampled completions, rewards,
group-relative advantages, or with ``objective="rft"`` those of rejection sampling) and ``epochs x
minibatches`` clipped policy-gradient updates.

    trainer = GRPO(cfg, model, split, fmt, granularity, dist)
    metrics = trainer.step(k)          # RL step k, 0-based; global (all-rank) means
    trainer.state_dict(k) / trainer.load_state_dict(state)   # model + optimizer: all a resume needs

It keeps dropout off, caches old log-probs (no grad, sampling temperature) only when a rollout gets
more than one update, loads a frozen reference only when beta > 0, and back-propagates only what
has a gradient: each micro-batch is cut to its longest completion, and (without KL) rows of zero
advantage are left out while the loss aggregation still counts them. Step k's randomness is a pure
function of (seed, k). Under DDP each rank samples its P / world prompts with its rows of the
global batch's sampling noise. The math is ``hlsm.grpo_loss``; ``sampled_reward`` is a rollout's
reward without an update (p0, tied groups: can GRPO learn here?).

With ``dynamic_sampling`` (DAPO) a step draws P prompts at a time from a prompt cursor (the RL-stream
items used so far; without it step k starts at k * P), draw d sampled with ``generator(k, d)``, keeps
the groups whose rewards do not all tie and trains on the first P kept (or all kept after
``max_draws``); its metrics add the draws, the extra rollouts and the ``kept_items`` its controls read.
Rollout statistics (reward, ``zero_std_frac``, lengths, entropy) stay over every completion drawn;
the update and its statistics are over the kept rows. The cursor is checkpointed with the weights.
With ``prompts_from`` step k's prompts are those another run kept at step k.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import torch

from hlsm.checkpoint import NonFiniteLossError
from hlsm.distributed import DistInfo, all_reduce_sum, shard, wrap_ddp
from hlsm.generation import Generation, completion_logprobs, generate, stack_rows
from hlsm.grpo_config import GRPOConfig, training_stream
from hlsm.grpo_loss import (
    RFT,
    aggregate_loss,
    clipped_policy_loss,
    combined_rewards,
    compute_group_advantages,
    k3_kl,
    replay_window,
    rft_advantages,
    tied_groups,
)
from hlsm.kept_items import KEPT_ITEMS
from hlsm.names import GRPO_SAMPLING
from hlsm.rng import stream_key
from hlsm.text import FORMS, Tokenizer, format_kw, trace_form


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    return ids, torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]


SUMMED = ("clip_low", "clip_high", "kl", "tokens", "logp_mismatch", "first_tokens", "trained")
STATS = (*SUMMED, "loss", "grad_norm", "replay_nll", "ratio_dev")


def rollout_sums(gen: Generation, reward: torch.Tensor, per: dict, group_size: int, depths: list[int]) -> dict:
    """A draw's statistics as sums over its completions: summed over draws and ranks, then divided,
    they are the step's rollout metrics (``GRPO._metrics``). ``depths``: each completion's prompt depth,
    to count the form each completion takes (``hlsm.text.trace_form``)."""
    if len(depths) != len(gen.texts):
        raise ValueError(f"rollout_sums: {len(depths)} depths for {len(gen.texts)} completions")
    forms = [trace_form(t, d) for t, d in zip(gen.texts, depths)]
    return {
        **{f"form/{f}": float(forms.count(f)) for f in FORMS},
        "n": float(len(reward)),
        "groups": float(len(reward) // group_size),
        "reward": reward.sum().item(),
        "reward_sq": (reward**2).sum().item(),
        "zero_std": tied_groups(reward, group_size).sum().item(),
        "len": gen.lengths.sum().item(),
        "truncated": (~gen.finished).sum().item(),
        "neg_logp": -(gen.logprobs * gen.mask).sum().item(),
        **{f"r/{name}": v.sum().item() for name, v in per.items()},
    }


@dataclass
class Rollout:
    """The completions a step trains on, on this rank; row n belongs to prompt n // G.

    Without dynamic sampling that is the one draw; with it, the groups kept from its draws.
    """

    prompts: list  # per row: its prompt's token ids
    gen: Generation  # the B * G completions (ids, mask, sampler log-probs, lengths, texts)
    reward: torch.Tensor  # (B * G,) combined reward
    per: dict  # reward name -> (B * G,) values
    adv: torch.Tensor  # (B * G,) advantages: group-relative, or RFT's (hlsm.grpo_loss.rft_advantages)
    items: list  # per group: its prompt's index in the RL stream
    drawn: dict  # rollout_sums over every completion drawn this step, kept or not (the rollout metrics)
    draws: int = 1  # draws of prompts this step (dynamic sampling: 1 .. max_draws)


def keep_groups(parts: list[tuple[Rollout, torch.Tensor]], pad_id: int) -> Rollout:
    """Groups ``groups`` of each draw's rollout in ``parts`` = [(rollout, groups), ...], in order, as one
    rollout (what a dynamic-sampling step trains on); its ``drawn`` sums every draw's statistics."""
    group_size = parts[0][0].gen.num_samples
    rows = [(ro, (g[:, None] * group_size + torch.arange(group_size)).flatten()) for ro, g in parts]

    def cat(get) -> torch.Tensor:
        return torch.cat([get(ro)[r.to(get(ro).device)] for ro, r in rows])

    return Rollout(
        prompts=[ro.prompts[i] for ro, r in rows for i in r.tolist()],
        gen=stack_rows([(ro.gen, r) for ro, r in rows], group_size, pad_id),
        reward=cat(lambda ro: ro.reward),
        per={name: cat(lambda ro, name=name: ro.per[name]) for name in parts[0][0].per},
        adv=cat(lambda ro: ro.adv),
        items=[ro.items[i] for ro, g in parts for i in g.tolist()],
        drawn={key: sum(ro.drawn[key] for ro, _ in parts) for key in parts[0][0].drawn},
        draws=len(parts),
    )


class GRPO:
    """One GRPO run's state: the policy (DDP-wrapped under torchrun), optimizer, reference, streams.

    ``GRPO(cfg, model, split).step(k)`` runs RL step k (rollout, rewards, advantages, updates) and
    returns its metrics. Every random draw of step k is a pure function of (seed, k) and dropout
    is off, so the state to resume from is the model and the optimizer alone (and, with dynamic
    sampling, the prompt cursor: where step k's first draw starts).
    """

    def __init__(self, cfg: GRPOConfig, model, split, fmt: str = "values", granularity: int = 1,
                 dist: DistInfo | None = None, tokenizer: Tokenizer | None = None, formats: dict | None = None):
        self.cfg = cfg.validate()
        self.dist = dist or DistInfo()
        self.tok = tokenizer or Tokenizer()
        self.split, self.fmt, self.granularity, self.formats = split, fmt, granularity, dict(formats or {})
        # the init run's per-support trace formats (SFTConfig.formats): RL prompts and replay items are
        # rendered as SFT rendered them; the rollouts may take any form (the reward reads the answer)
        kw = lambda name: format_kw(self.formats, name, fmt, granularity)
        world = self.dist.world_size
        for name in ("dynamic_sampling", "prompts_from"):
            if getattr(cfg, name) and world > 1:  # a step's batch is any number of groups: no equal shares
                raise ValueError(f"GRPOConfig.{name}: runs in one process only, not over {world} ranks")
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
        self.rl = training_stream(split, cfg.rl_support, "rl_support", cfg.seed, **kw(cfg.rl_support))
        self.cursor = 0  # dynamic sampling: RL-stream items the steps done have drawn (else step k starts at k*P)
        self.followed = cfg.followed()[1] if cfg.prompts_from else None  # step -> its prompts' RL-stream items
        # replay items per step, all ranks together (as the labelled control counts them), split evenly
        self.n_replay_global = round(cfg.replay_fraction * cfg.prompts_per_step)
        self.n_replay = replay_window(0, self.n_replay_global, self.dist.rank, world)[1]
        self.replay = None
        if self.n_replay:
            self.replay = training_stream(split, cfg.replay_support, "replay_support", cfg.seed,
                                          **kw(cfg.replay_support))
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
        state = {
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.opt.state_dict(),
            "step": step,
            "config": self.cfg.to_dict(),
        }
        if self.cfg.dynamic_sampling:
            state["cursor"] = self.cursor
        return state

    def load_state_dict(self, state: dict) -> int:
        """Restore model and optimizer (and the prompt cursor); returns the number of steps already done."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.cfg.dynamic_sampling:
            self.cursor = int(state["cursor"])
        return int(state["step"])

    # --- one step -----------------------------------------------------------------------------

    def generator(self, k: int, draw: int = 0) -> torch.Generator:
        """The sampling generator of draw ``draw`` of step k, the same on every rank: a pure function of
        (seed, k, draw).

        Each rank draws the noise of the whole global batch and uses its own rows of it, so a run
        samples the same completions on any number of ranks (the trailing 0 keeps the key of the
        single-process runs made before ranks shared it). Draw 0, the only one without dynamic
        sampling, keeps that key; a further draw appends its number.
        """
        key = stream_key(self.cfg.seed, GRPO_SAMPLING, k, 0, *((draw,) if draw else ())) & (2**63 - 1)
        return torch.Generator().manual_seed(key)

    def prompts(self, k: int, start: int | None = None) -> list:
        """This rank's RL items of the draw of step k that starts at RL-stream item ``start``: items
        [start + lo, start + hi). ``start`` defaults to k*P, step k's one draw without dynamic sampling."""
        start = k * self.cfg.prompts_per_step if start is None else start
        return self.rl.sample(self.hi - self.lo, start=start + self.lo)

    def replay_items(self, k: int) -> list:
        """This rank's labelled replay items of step k (none without replay)."""
        if not self.replay:
            return []
        start, n = replay_window(k, self.n_replay_global, self.dist.rank, self.dist.world_size)
        return self.replay.sample(n, start=start)

    def rollout(self, k: int) -> Rollout:
        """Step k's prompts, G sampled completions each, their rewards and advantages: RL items
        [k*P, (k+1)*P) (this rank's share); with ``prompts_from``, the items the followed run kept at
        step k; with dynamic sampling, draws of P items from the cursor on, the untied groups kept
        until P are (the first P) or ``max_draws`` draws are done. The cursor is not moved (``step`` moves it).
        """
        cfg, p, g = self.cfg, self.cfg.prompts_per_step, self.cfg.group_size
        if self.followed is not None:
            items = self.followed[k]
            return self.draw(k, 0, [self.rl[i] for i in items], items, len(items))
        if not cfg.dynamic_sampling:
            return self.draw(k, 0, self.prompts(k), range(k * p + self.lo, k * p + self.hi), p)
        parts, kept = [], 0
        for d in range(cfg.max_draws):
            start = self.cursor + d * p
            ro = self.draw(k, d, self.prompts(k, start), range(start, start + p), p)
            groups = torch.nonzero(~tied_groups(ro.reward, g)).flatten()[: p - kept]
            parts.append((ro, groups))
            kept += len(groups)
            if kept == p:
                break
        return keep_groups(parts, self.tok.pad_id)

    def draw(self, k: int, d: int, examples: list, items, total: int) -> Rollout:
        """Draw ``d`` of step k: ``examples`` (this rank's; RL-stream ``items``) of a global draw of ``total``
        prompts, G completions each sampled with ``generator(k, d)``, their rewards and advantages."""
        cfg, tok, g = self.cfg, self.tok, self.cfg.group_size
        prompts = [tok.encode(ex.prompt, bos=True) for ex in examples]
        gen = generate(
            self.model, prompts, self.max_new, cfg.temperature, cfg.top_k or None, tok.eos_id, tok.pad_id,
            g, self.generator(k, d), tok, rows=(self.lo * g, total * g),  # this rank's share
        ) if prompts else stack_rows([], g, tok.pad_id)  # a followed step that kept nothing
        group_ex = [ex for ex in examples for _ in range(g)]
        reward, per = combined_rewards(group_ex, gen.texts, cfg.rewards)
        if cfg.objective == RFT:  # keep the correct completions (every rank's count: one global mean NLL)
            correct = per["answer"] == 1.0
            kept = all_reduce_sum(correct.sum().to(self.dist.device, torch.float64), self.dist)
            adv = rft_advantages(correct, kept.item() / max(total * g, 1))
        else:
            adv = compute_group_advantages(reward, g, cfg.scale_std)
        adv = adv.to(self.dist.device)
        rows = [prompts[i // g] for i in range(len(prompts) * g)]
        return Rollout(rows, gen, reward, per, adv, list(items),
                       rollout_sums(gen, reward, per, g, [ex.depth for ex in group_ex]))

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
        least one row: every rank must take part in DDP's gradient all-reduce. A rollout of no rows
        (a dynamic-sampling step that kept no group) has none: its update moves nothing but replay.
        """
        out = []
        for j in range(self.cfg.minibatches):
            rows = torch.arange(j, len(adv), self.cfg.minibatches, device=adv.device)
            if self.ref is None:
                live = rows[adv[rows] != 0]
                rows = live if len(live) else rows[:1]
            rows = rows[torch.argsort(lengths[rows], stable=True)]
            out.append(list(rows.split(self.cfg.micro_batch_size)) if len(rows) else [])  # none: nothing kept
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
        if cfg.dynamic_sampling:
            self.cursor += ro.draws * cfg.prompts_per_step
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
        mb = len(ro.adv) // cfg.minibatches  # rows per minibatch (validate: minibatches divide every group)
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
        """Global (all-rank) means of the step's statistics: of every completion drawn (reward, tied
        groups, lengths, entropy), of the rows trained on (clipping, KL, tokens, trained_frac's count)."""
        cfg, per = self.cfg, ro.per
        local = {**ro.drawn, **{key: stats[key] for key in SUMMED}}
        vec = torch.tensor(list(local.values()), dtype=torch.float64, device=self.dist.device)
        vec = all_reduce_sum(vec, self.dist)
        tot = dict(zip(local, vec.tolist()))
        # a step may draw nothing (prompts_from: the followed step kept no group): no mean divides by 0
        n, tokens, first = max(tot["n"], 1.0), max(tot["tokens"], 1.0), max(tot["first_tokens"], 1.0)
        mean = tot["reward"] / n
        out = {
            "step": k + 1,
            "reward_mean": mean,
            "reward_std": math.sqrt(max(tot["reward_sq"] / n - mean**2, 0.0)),
            **{f"reward/{name}": tot[f"r/{name}"] / n for name in per},
            "zero_std_frac": tot["zero_std"] / max(tot["groups"], 1.0),  # groups whose G rewards are all equal
            # the forms the completions take (explicit / values: every step written out; chunked; answer)
            **{f"form/{f}": tot[f"form/{f}"] / n for f in FORMS},
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
        if cfg.dynamic_sampling:
            out.update({
                "draws": ro.draws,  # draws of P prompts this step
                "prompts_drawn": ro.draws * cfg.prompts_per_step,  # the prompt cursor moved this far
                "kept_groups": len(ro.items),  # groups trained on (untied), <= P
                "extra_rollouts": (ro.draws - 1) * cfg.prompts_per_step * cfg.group_size,  # beyond P * G
                KEPT_ITEMS: ro.items,  # RL-stream indices of the kept prompts, in training order
            })
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
        same = tied_groups(r, samples)
        tied += same.sum().item()
        all_zero += (same & (g[:, 0] == 0)).sum().item()
        all_max += (same & (g[:, 0] == top)).sum().item()
    groups = max(n // samples, 1)
    return {"reward": total / n, **{f"reward/{k}": v / n for k, v in per.items()},
            "zero_std_frac": tied / groups, "all_zero_frac": all_zero / groups, "all_max_frac": all_max / groups}
