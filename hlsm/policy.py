"""The policy: a small decoder-only transformer (nanoGPT-shaped).

    cfg = PolicyConfig.preset("cpu")                     # or PolicyConfig(n_layer=..., ...)
    model = Policy(cfg)
    logits = model(idx)                                  # (B, T, V), causal, positions 0..T-1
    logits, hidden = model(idx, return_hidden=True)      # hidden: [embeddings, block 1.., final norm]

Sampling with the KV cache and teacher-forced log-probs (``generate``, ``completion_logprobs``,
``Generation``, ``left_pad``) live in ``hlsm.generation``; they stay importable from here.

What probes may read of a Policy is one small contract (``probes/`` uses nothing else of the
module tree): ``layer_names()`` names the residual-stream layers of ``forward(return_hidden=True)``,
``layer_module(i)`` is the module whose output is layer i (for forward hooks), and
``param_layer(name)`` says which layer a parameter belongs to.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hlsm.presets import MODEL_PRESETS

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


# The model shape of each preset name (the table, beside SFT's and GRPO's, is hlsm.presets).
PRESETS = {name: PolicyConfig(**shape) for name, shape in MODEL_PRESETS.items()}


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


def attention_mask(start: int, T: int, key_mask: torch.Tensor | None, device) -> torch.Tensor | str | None:
    """The mask of T queries at positions start.. over the start + T keys: "causal", None (one query
    after the cache: it sees every key) or a bool (B or 1, 1, T, S) tensor; ``key_mask`` as in
    ``Policy.forward``. Plain causal attention lets SDPA use its fused kernel, so a tensor is built
    only when padding or a cache offset needs one."""
    if key_mask is None and start == 0:
        return "causal"
    if key_mask is None and T == 1:
        return None
    S = start + T
    qpos = torch.arange(start, S, device=device)[:, None]
    kpos = torch.arange(S, device=device)[None, :]
    allowed = (kpos <= qpos)[None]
    if key_mask is not None:
        allowed = (allowed & key_mask[:, None, :S]) | (kpos == qpos)[None]
    return allowed[:, None]  # (B or 1, 1, T, S)


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

        mask = attention_mask(start, T, key_mask, idx.device)
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

    # --- what probes read: the layers of the residual stream and who owns each parameter -------

    def layer_names(self) -> list[str]:
        """Names of ``forward(return_hidden=True)``'s hidden list: emb, block1..blockN, ln_f."""
        return layer_names(self.config.n_layer)

    def layer_module(self, i: int) -> nn.Module:
        """The module whose forward output is ``hidden[i]``, for forward hooks (a hook that returns a
        tensor replaces layer i's residual stream): the embedding dropout, block i, or the final norm."""
        n = self.config.n_layer
        if not 0 <= i <= n + 1:
            raise ValueError(f"layer must be in 0..{n + 1} ({', '.join(self.layer_names())}), got {i}")
        return self.drop if i == 0 else self.ln_f if i == n + 1 else self.blocks[i - 1]

    @staticmethod
    def param_layer(name: str) -> str:
        """The layer (a name of ``layer_names()``) that parameter ``name`` (as ``named_parameters()``
        or ``state_dict()`` spell it) belongs to. The tied ``lm_head.weight`` is the token table: emb."""
        top, _, rest = name.partition(".")
        if top in ("wte", "wpe", "lm_head"):
            return "emb"
        if top == "blocks":
            return f"block{int(rest.split('.')[0]) + 1}"
        if top == "ln_f":
            return "ln_f"
        raise ValueError(f"{name!r} is not a parameter of a Policy")

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


def unwrap(model) -> Policy:
    """The Policy inside a DDP / torch.compile wrapper (its config and cache-aware forward)."""
    while not isinstance(model, Policy):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if model is None:
            raise TypeError("expected a Policy (optionally wrapped by DDP or torch.compile)")
    return model


def layer_names(n_layer: int) -> list[str]:
    """``Policy.layer_names()`` of a policy with ``n_layer`` blocks: emb, block1..blockN, ln_f."""
    return ["emb", *(f"block{i}" for i in range(1, n_layer + 1)), "ln_f"]


# The sampling code moved to hlsm.generation, which imports this module; its names are still
# importable from here, looked up on first use (an import at the top would be circular).
_GENERATION = ("Generation", "generate", "completion_logprobs", "left_pad")


def __getattr__(name):
    if name in _GENERATION:
        import hlsm.generation

        return getattr(hlsm.generation, name)
    raise AttributeError(f"module 'hlsm.policy' has no attribute {name!r}")
