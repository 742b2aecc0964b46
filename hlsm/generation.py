"""Sampling from the policy with a KV cache, and teacher-forced log-probs of completions.

    out = generate(model, prompt_ids, max_new_tokens=64, num_samples=8, generator=g)
    out.ids, out.mask, out.texts                          # (B*G, T), (B*G, T) incl. <eos>, strings
    logp, ent = completion_logprobs(model, prompt_ids, out.ids, out.mask, temperature=1.0)

Prompts of different lengths are left-padded; every row gets its own positions (0 at its <bos>)
and a key mask that hides its padding, so a row's output does not depend on the other rows.
Row n of a generation belongs to prompt n // G. The model is ``hlsm.policy.Policy`` (optionally
wrapped by DDP or torch.compile); these names are also importable from ``hlsm.policy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hlsm.policy import AUTOCAST_DTYPE, KVCache, autocast, unwrap


def left_pad(prompt_ids, pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) left-padded ids and (B,) number of padding tokens per row."""
    if not len(prompt_ids) or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("prompt_ids must be a non-empty list of non-empty token lists")
    width = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompt_ids], dtype=torch.long)
    pad = torch.tensor([width - len(p) for p in prompt_ids], dtype=torch.long)
    return ids.to(device), pad.to(device)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _sample(logits, temperature: float, top_k: int | None, generator, rows: tuple | None = None):
    """Next token per row from (N, V) logits: argmax at temperature 0, else Gumbel-max sampling.

    Gumbel-max (argmax of logits/T - log E, E ~ Exp(1)) draws its noise from ``generator``'s own
    device, so the same generator gives the same stream whether the model runs on CPU or GPU.
    ``rows=(index, total)``: these N rows are rows ``index`` (N,) of a batch of ``total``; the
    noise of all ``total`` rows is drawn and theirs used, so a row's sample does not depend on which
    other rows share its batch (finished rows dropped, or the batch split over data-parallel ranks).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    dev = generator.device if generator is not None else logits.device
    pick, total = rows if rows is not None else (None, logits.shape[0])
    e = torch.empty((total, logits.shape[1]), device=dev).exponential_(generator=generator)
    e = (e if pick is None else e[pick.to(dev)]).to(logits.device)
    return (logits - e.log()).argmax(dim=-1)


@dataclass
class Generation:
    """B prompts x G samples; row n belongs to prompt n // G."""

    ids: torch.Tensor  # (B*G, T) completion token ids; pad_id after each row's <eos>
    mask: torch.Tensor  # (B*G, T) bool: completion tokens up to and including <eos>
    logprobs: torch.Tensor  # (B*G, T) log-prob of each sampled token at the sampling temperature; 0 if masked
    lengths: torch.Tensor  # (B*G,) mask.sum(1): tokens written, <eos> included
    finished: torch.Tensor  # (B*G,) bool: the row wrote <eos> within max_new_tokens
    texts: list[str]  # decoded completions (cut at <eos>)
    num_samples: int  # G


def stack_rows(parts: list[tuple[Generation, torch.Tensor]], num_samples: int, pad_id: int = 0) -> Generation:
    """Rows ``rows`` of each ``(generation, rows)`` of ``parts``, one part after another, right-padded to
    the widest: padding is what ``generate`` leaves after a row's <eos> (pad_id, masked, log-prob 0), so
    each row's tokens, mask, log-probs, length and finished flag are its own. No parts: no rows."""
    width = max((g.ids.shape[1] for g, _ in parts), default=0)

    def cat(name: str, fill, dtype: torch.dtype) -> torch.Tensor:
        cols = [getattr(g, name)[r.to(g.ids.device)] for g, r in parts]
        if fill is not None:  # (rows, T) columns: pad each part to the widest
            cols = [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=fill) for c in cols]
        return torch.cat(cols) if cols else torch.zeros((0, 0) if fill is not None else (0,), dtype=dtype)

    mask = cat("mask", False, torch.bool)
    return Generation(cat("ids", pad_id, torch.long), mask, cat("logprobs", 0.0, torch.float32), mask.sum(dim=1),
                      cat("finished", None, torch.bool), [g.texts[i] for g, r in parts for i in r.tolist()],
                      num_samples)


def _check_sampling(n_prompts: int, max_new_tokens: int, temperature: float, top_k, num_samples: int, rows):
    """``generate``'s arguments, each checked (ValueError naming it)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if rows is not None and not (0 <= rows[0] and rows[0] + n_prompts * num_samples <= rows[1]):
        raise ValueError(f"rows={rows} must place {n_prompts * num_samples} rows inside the global batch")


@torch.no_grad()
def generate(
    model,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int = 2,
    pad_id: int = 0,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    tokenizer=None,
    rows: tuple[int, int] | None = None,
) -> Generation:
    """Sample ``num_samples`` completions of each prompt with a preallocated KV cache.

    ``prompt_ids``: B token lists (each starting with <bos>). Prompts are prefilled once and their
    cache shared by the G samples. ``temperature=0`` is greedy decoding. Decoding stops at
    ``max_new_tokens`` or once every row has written ``eos_id``. ``tokenizer`` (default
    hlsm.text.Tokenizer()) decodes ``texts``. ``rows=(offset, total)``: these B * G rows are rows
    offset.. of a global batch of ``total`` sampled with the same generator (one data-parallel
    rank's share); each row's samples are then those it gets in the global batch.
    """
    # one function: prefill, the decode loop and its dropping of finished rows share the KV cache,
    # the row index and five per-row tensors; split, each piece would pass them all around
    _check_sampling(len(prompt_ids), max_new_tokens, temperature, top_k, num_samples, rows)
    base, device = unwrap(model), _model_device(model)
    cfg = base.config
    ids, pad = left_pad(prompt_ids, pad_id, device)
    B, P = ids.shape
    if P + max_new_tokens > cfg.block_size:
        raise ValueError(
            f"longest prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds block_size={cfg.block_size}"
        )
    G, N, S = num_samples, B * num_samples, P + max_new_tokens
    key_mask = torch.arange(S, device=device)[None, :] >= pad[:, None]  # (B, S): hide left padding
    positions = (torch.arange(P, device=device)[None, :] - pad[:, None]).clamp(min=0)
    amp = autocast(device)
    cache_dtype = AUTOCAST_DTYPE.get(device.type, next(base.parameters()).dtype)

    was_training = base.training
    base.eval()
    try:
        with amp:
            cache = KVCache.allocate(cfg, B, S, device, cache_dtype)
            logits = base(ids, positions, key_mask, cache, last_only=True)[:, -1]
        cache = cache.take(torch.arange(B, device=device).repeat_interleave(G))
        logits = logits.repeat_interleave(G, dim=0)
        key_mask = key_mask.repeat_interleave(G, dim=0)
        next_pos = (P - pad).repeat_interleave(G)[:, None]  # each row's own next position

        out = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
        live = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)
        logp = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
        done = torch.zeros(N, dtype=torch.bool, device=device)
        offset, total = rows or (0, N)
        cur = torch.arange(N, device=device)  # the rows still in the decoding batch
        cur_done = torch.zeros(N, dtype=torch.bool, device=device)
        steps = 0
        for t in range(max_new_tokens):
            tok = _sample(logits, temperature, top_k, generator, (offset + cur, total))
            lp = torch.log_softmax(logits.float() / (temperature or 1.0), dim=-1).gather(1, tok[:, None])[:, 0]
            write = cur[~cur_done]
            logp[write, t] = lp[~cur_done]
            out[write, t] = tok[~cur_done]
            live[write, t] = True
            cur_done = cur_done | (tok == eos_id)
            done[cur] = cur_done
            steps = t + 1
            if t + 1 == max_new_tokens or bool(cur_done.all()):
                break
            if 4 * int(cur_done.sum()) >= len(cur):
                # drop finished rows once they are a quarter of the batch: later steps cost what is left
                keep = (~cur_done).nonzero()[:, 0]
                cur, tok, cur_done = cur[keep], tok[keep], cur_done[keep]
                cache, key_mask, next_pos = cache.take(keep), key_mask[keep], next_pos[keep]
            with amp:
                logits = base(tok[:, None], next_pos + t, key_mask, cache)[:, -1]
    finally:
        base.train(was_training)

    out, live, logp = out[:, :steps], live[:, :steps], logp[:, :steps]
    if tokenizer is None:
        from hlsm.text import Tokenizer

        tokenizer = Tokenizer()
    lengths = live.sum(dim=1)
    texts = [tokenizer.decode(row[:n]) for row, n in zip(out.tolist(), lengths.tolist())]
    return Generation(out, live, logp, lengths, done, texts, G)


def completion_logprobs(
    model,
    prompt_ids,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = True,
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher-forced log-probs (and entropies) of completion tokens under ``model``.

    prompt_ids: N token lists, or B lists with N a multiple of B (row n then uses prompt n // (N/B),
    the layout of ``generate``). completion_ids/mask: (N, T). Returns (logprobs, entropy), each
    (N, T) float32 and 0 where the mask is off; the distribution is softmax(logits / temperature).
    Gradients flow (call under torch.no_grad() for old/reference log-probs). Keeps the model's mode.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    device = _model_device(model)
    N, T = completion_ids.shape
    if N % len(prompt_ids):
        raise ValueError(f"{N} completions do not split into groups over {len(prompt_ids)} prompts")
    prompts, pad = left_pad(prompt_ids, pad_id, device)
    g = N // len(prompt_ids)
    if g > 1:
        prompts, pad = prompts.repeat_interleave(g, dim=0), pad.repeat_interleave(g)
    P = prompts.shape[1]
    completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device).bool()
    # masked completion slots may hold anything; feed pad_id there (they only follow the real tokens)
    seq = torch.cat([prompts, torch.where(completion_mask, completion_ids, pad_id)], dim=1)
    positions = (torch.arange(P + T, device=device)[None, :] - pad[:, None]).clamp(min=0)
    key_mask = torch.arange(P + T, device=device)[None, :] >= pad[:, None]
    with autocast(device):
        logits = model(seq[:, :-1], positions[:, :-1], key_mask[:, :-1])[:, P - 1 :]
    logits = logits.float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(2, seq[:, P:, None])[..., 0] * completion_mask
    ent = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1) * completion_mask
    return logp, ent
