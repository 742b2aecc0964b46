"""The policy: a small decoder-only transformer (nanoGPT-shaped) and batched KV-cache sampling.

    cfg = PolicyConfig.preset("cpu")                     # or PolicyConfig(n_layer=..., ...)
    model = Policy(cfg)
    logits = model(idx)                                  # (B, T, V), causal, positions 0..T-1
    logits, hidden = model(idx, return_hidden=True)      # hidden: [embeddings, block 1.., final norm]
    out = generate(model, prompt_ids, max_new_tokens=64, num_samples=8, generator=g)
    out.ids, out.mask, out.texts                          # (B*G, T), (B*G, T) incl. <eos>, strings
    logp, ent = completion_logprobs(model, prompt_ids, out.ids, out.mask, temperature=1.0)

Prompts of different lengths are left-padded; every row gets its own positions (0 at its <bos>)
and a key mask that hides its padding, so a row's output does not depend on the other rows.
Row n of a generation belongs to prompt n // G.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITIONS = ("learned", "rope", "none")


@dataclass
class PolicyConfig:
    """Shape of the transformer; ``validate`` raises a ValueError naming the bad field."""

    vocab_size: int = 69  # token ids 0..vocab_size-1 (hlsm.text.Tokenizer has 69)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # residual stream width
    block_size: int = 96  # longest sequence (prompt + completion) the model can see
    dropout: float = 0.0  # dropout on attention weights and residual branches (training only)
    pos: str = "learned"  # position signal: learned absolute | rope (rotary) | none (causal mask only)
    bias: bool = False  # biases in Linear and LayerNorm layers (nanoGPT: off is a bit better and faster)

    def __post_init__(self):
        self.validate()

    def validate(self) -> PolicyConfig:
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PolicyConfig.{name} must be an integer >= 1, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"PolicyConfig.n_head={self.n_head} must divide n_embd={self.n_embd}")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            hs = self.n_embd // self.n_head
            raise ValueError(f"PolicyConfig.pos='rope' needs an even head size n_embd / n_head, got {hs}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PolicyConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.pos not in POSITIONS:
            raise ValueError(f"PolicyConfig.pos must be one of {', '.join(POSITIONS)}, got {self.pos!r}")
        return self

    @classmethod
    def preset(cls, name: str, **overrides) -> PolicyConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(**{**asdict(PRESETS[name]), **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # ~0.4M params: tests and smoke runs, seconds on a CPU core (depth <= 3, values format)
    "smoke": PolicyConfig(n_layer=2, n_head=4, n_embd=128, block_size=96),
    # ~0.8M params: minutes on 2 CPU cores; long enough for depth-6 explicit traces
    "cpu": PolicyConfig(n_layer=4, n_head=4, n_embd=128, block_size=160),
    # ~10.7M params: one GPU
    "paper": PolicyConfig(n_layer=6, n_head=8, n_embd=384, block_size=256, pos="rope"),
}


# Mixed precision per device type: bf16 autocast and bf16 KV caches on CUDA; CPU runs stay fp32 and
# bit-reproducible. (A test adds "cpu" here to run the CUDA path's dtypes on a machine without a GPU.)
AUTOCAST_DTYPE = {"cuda": torch.bfloat16}


def autocast(device) -> contextlib.AbstractContextManager:
    """Autocast to ``AUTOCAST_DTYPE[device type]`` (bf16 on CUDA), nothing elsewhere."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPE.get(device.type)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


# --- the model ------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Preallocated keys and values of every layer: (n_layer, B, n_head, max_len, head_size) each."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0  # positions filled so far

    @classmethod
    def allocate(cls, cfg: PolicyConfig, batch: int, max_len: int, device, dtype=torch.float32) -> KVCache:
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.n_embd // cfg.n_head)
        k = torch.zeros(shape, device=device, dtype=dtype)
        return cls(k, torch.zeros_like(k))

    def take(self, rows: torch.Tensor) -> KVCache:
        """A cache of the rows ``rows`` (indices, repeats allowed) with the same capacity.

        Only the filled positions are copied (the rest is never read before it is written): sharing
        one prompt prefill across G samples, and dropping finished rows while decoding, stay cheap.
        """
        k = self.k.new_empty((self.k.shape[0], len(rows), *self.k.shape[2:]))
        v = torch.empty_like(k)
        k[:, :, :, : self.length] = self.k[:, rows, :, : self.length]
        v[:, :, :, : self.length] = self.v[:, rows, :, : self.length]
        return KVCache(k, v, self.length)


def rope_tables(cfg: PolicyConfig, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (block_size, head_size / 2) each."""
    hs = cfg.n_embd // cfg.n_head
    inv_freq = 1.0 / base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
    angles = torch.arange(cfg.block_size, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1, x2) of the two halves of each head by position-dependent angles.

    x is (B, H, T, hs); cos/sin are (B or 1, T, hs/2) gathered at each row's positions.
    """
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, mask=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            # write this step's keys/values into the preallocated cache, attend over all filled ones
            end = cache.length + T
            cache.k[layer, :, :, cache.length : end] = k
            cache.v[layer, :, :, cache.length : end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask if isinstance(mask, torch.Tensor) else None,
            is_causal=isinstance(mask, str),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_drop(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), rope, mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class Policy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one table to read and write tokens
        if cfg.pos == "rope":
            cos, sin = rope_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        return_hidden: bool = False,
        last_only: bool = False,
    ):
        """Logits (B, T, V) of the next token at every position of ``idx`` (B, T).

        positions: (B, T) position of each token in its own sequence (default: cache length + 0..T-1).
        key_mask: (B, S) bool, True where a key position (cache + these tokens, S >= their total)
            holds a real token; padding keys are hidden. A query always sees itself, so a padding
            query still gets a finite (unused) output.
        kv_cache: keys/values of earlier positions, extended in place by this call.
        return_hidden: also return the residual stream [embeddings, after each block, after ln_f],
            each (B, T, n_embd), for probes.
        last_only: logits of the last position only, (B, 1, V) (sampling does not need the rest).
        """
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)[None, :]

        # Plain causal attention lets SDPA use its fused kernel; a mask is built only when padding
        # or a cache offset needs one.
        if key_mask is None and start == 0:
            mask = "causal"
        elif key_mask is None and T == 1:
            mask = None
        else:
            S = start + T
            qpos = torch.arange(start, S, device=idx.device)[:, None]
            kpos = torch.arange(S, device=idx.device)[None, :]
            allowed = (kpos <= qpos)[None]
            if key_mask is not None:
                allowed = (allowed & key_mask[:, None, :S]) | (kpos == qpos)[None]
            mask = allowed[:, None]  # (B or 1, 1, T, S)

        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)
        elif self.config.pos == "rope":
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.drop(x)
        hidden = [x] if return_hidden else None
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, kv_cache, i)
            if return_hidden:
                hidden.append(x)
        if kv_cache is not None:
            kv_cache.length = start + T
        x = self.ln_f(x)
        if return_hidden:
            hidden.append(x)
        logits = self.lm_head(x[:, -1:] if last_only else x)
        return (logits, hidden) if return_hidden else logits

    def configure_optimizer(
        self, lr: float, weight_decay: float, betas=(0.9, 0.95), fused: bool | None = None
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices only (not on norms, biases, or 1-D parameters).

        ``fused`` (default: on for CPU and CUDA parameters) runs the update as one kernel: ~4x
        faster than the per-tensor loop on CPU, which matters for small models.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if fused is None:
            fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


# --- batching helpers -----------------------------------------------------------------------


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


def unwrap(model) -> Policy:
    """The Policy inside a DDP / torch.compile wrapper (its config and cache-aware forward)."""
    while not isinstance(model, Policy):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if model is None:
            raise TypeError("expected a Policy (optionally wrapped by DDP or torch.compile)")
    return model


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
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if rows is not None and not (0 <= rows[0] and rows[0] + len(prompt_ids) * num_samples <= rows[1]):
        raise ValueError(f"rows={rows} must place {len(prompt_ids) * num_samples} rows inside the global batch")
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
