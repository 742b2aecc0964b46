"""The GRPO math as small pure functions, each tested on hand-computed values.

    tied_groups(rewards, G)                              which groups' G rewards are all equal (no signal)
    compute_group_advantages(rewards, G, scale_std)      (r - group mean) [/ (group std + eps)], 0 if tied
    rft_advantages(correct, kept_frac)                   1 / kept_frac on correct rows, else 0 (rejection sampling)
    masked_mean(x, mask, dim) / aggregate_loss(...)      seq_mean | token_mean | constant (Dr. GRPO)
    clipped_policy_loss(logp, old_logp, adv, lo, hi)     -min(r A, clip(r, 1-lo, 1+hi) A), clip stats
    k3_kl(logp, ref_logp)                                exp(ref - logp) - (ref - logp) - 1
    combined_rewards(examples, texts, weights)           sum_k w_k R_k, plus each R_k
    replay_window(k, n, rank, world)                     a rank's share of step k's replay items

``hlsm.grpo`` (the trainer) imports them; nothing here knows about models or runs.
"""

from __future__ import annotations

import torch

LOSS_AGGREGATIONS = ("seq_mean", "token_mean", "constant")
GRPO, RFT = "grpo", "rft"
OBJECTIVES = (GRPO, RFT)  # GRPOConfig.objective: group-relative advantages, or SFT on the correct samples


def tied_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B/G,) bool: the groups of ``rewards`` (B,), laid out as B/G consecutive groups of G, whose rewards
    are all equal. Such a group has zero advantage and no gradient: GRPO's ``zero_std_frac`` counts them
    and dynamic sampling (``GRPOConfig.dynamic_sampling``) drops them."""
    r = rewards.view(-1, group_size)
    return r.amax(dim=1) == r.amin(dim=1)


def compute_group_advantages(
    rewards: torch.Tensor, group_size: int, scale_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages of ``rewards`` (B,), laid out as B/G consecutive groups of G.

    A_i = r_i - mean(group), divided by (std(group) + eps) when ``scale_std`` (unbiased std, as in
    DeepSeekMath and TRL). A group whose rewards are all tied gets A = 0 exactly, never NaN: the
    float mean of tied rewards such as 1/3 can differ from them by an ulp, and that residual over
    (std + eps) would otherwise be a spurious advantage of a few percent.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of G={group_size} entries, got {tuple(rewards.shape)}"
        )
    r = rewards.float().view(-1, group_size)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale_std:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    return adv.masked_fill(tied_groups(r, group_size)[:, None], 0.0).reshape(-1)


def rft_advantages(correct: torch.Tensor, kept_frac: float) -> torch.Tensor:
    """Rejection-sampling fine-tuning as advantages: ``1 / kept_frac`` on the correct rows, 0 elsewhere.

    With one update per rollout the ratio is 1 and the clipped surrogate's gradient is -A grad log p,
    so under ``seq_mean`` aggregation (sum over rows / number of rows) these advantages give exactly
    the gradient of the mean NLL over the kept completions: SFT on the policy's own correct samples,
    no baseline and no negative advantage. ``kept_frac`` is the kept fraction of the whole batch (all
    ranks); none kept gives all zeros: a zero gradient (AdamW's momentum still moves the weights, as on
    a GRPO step whose groups all tie).
    """
    if kept_frac <= 0:
        return torch.zeros_like(correct, dtype=torch.float)
    return correct.float() / kept_frac


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is true (along ``dim``, or all of them).

    An all-masked row (or tensor) gives 0, not NaN.
    """
    m = mask.to(x.dtype)
    total = (x * m).sum() if dim is None else (x * m).sum(dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp(min=1)


def aggregate_loss(
    per_token: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over the completion tokens ``mask`` to a scalar.

    ``seq_mean``: mean over sequences of each sequence's token mean (GRPO as published: short
    sequences weigh more per token). ``token_mean``: sum over all tokens / number of tokens (DAPO).
    ``constant``: sum over all tokens / (B * max_len) (Dr. GRPO: no length normalization).
    """
    if mode == "seq_mean":
        return masked_mean(per_token, mask, dim=1).mean()
    if mode == "token_mean":
        return masked_mean(per_token, mask)
    if mode == "constant":
        if not max_len:
            raise ValueError("loss_agg='constant' needs max_len (the maximum completion length)")
        return (per_token * mask.to(per_token.dtype)).sum() / (per_token.shape[0] * max_len)
    raise ValueError(f"unknown loss aggregation {mode!r}; allowed: {', '.join(LOSS_AGGREGATIONS)}")


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO/GRPO clipped surrogate loss, -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A).

    ``logprobs``/``old_logprobs`` are (B, T) log-probs of the sampled tokens under the current and
    the sampling policy; ``advantages`` is (B,) (one per sequence) or (B, T). Returns the (B, T)
    loss and metadata: ``ratio`` (B, T), and boolean (B, T) masks ``clip_low`` / ``clip_high`` of
    the tokens where the clip is active (r < 1 - eps_low with A < 0, r > 1 + eps_high with A > 0),
    i.e. where the token gets no gradient.
    """
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    with torch.no_grad():
        meta = {
            "ratio": ratio.detach(),
            "clip_low": (ratio < 1.0 - eps_low) & (adv < 0),
            "clip_high": (ratio > 1.0 + eps_high) & (adv > 0),
        }
    return loss, meta


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref) on tokens sampled from pi (Schulman 2020).

    exp(ref - logp) - (ref - logp) - 1: unbiased, always >= 0, exactly 0 where the two agree.
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0


def replay_window(k: int, n_global: int, rank: int = 0, world: int = 1) -> tuple[int, int]:
    """(start, count) of a rank's replay items at step k: its contiguous share of the step's global
    items [k * n_global, (k + 1) * n_global), the items the labelled control trains on at step k."""
    if n_global % world:
        raise ValueError(
            f"GRPOConfig.replay_fraction: round(replay_fraction * P) = {n_global} replay items per step "
            f"must split evenly over {world} ranks"
        )
    per = n_global // world
    return k * n_global + rank * per, per


def combined_rewards(examples, completions, weights: dict[str, float], rewards: dict | None = None):
    """Score each completion text against its example with named, weighted reward functions.

    ``weights`` maps names in ``rewards`` (default ``hlsm.text.REWARDS``) to weights. Returns
    (total (B,) float tensor = sum_k w_k R_k, {name: (B,) tensor of R_k}).
    """
    from hlsm.text import REWARDS

    table = REWARDS if rewards is None else rewards
    for name in weights:
        if name not in table:
            raise ValueError(f"unknown reward {name!r}; allowed: {', '.join(sorted(table))}")
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    per = {
        name: torch.tensor([float(table[name](ex, c)) for ex, c in zip(examples, completions)])
        for name in weights
    }
    total = torch.zeros(len(completions))
    for name, w in weights.items():
        total += w * per[name]
    return total, per
