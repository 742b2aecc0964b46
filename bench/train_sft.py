"""SFT training throughput: ``hlsm.sft.train`` against a plain nanoGPT-style loop, in one run.

    python bench/train_sft.py [--preset cpu] [--steps 60] [--warmup 10] [--repeats 5] [--threads 2]
    python bench/train_sft.py --preset paper --device cuda [--peak-tflops 989]   # tokens/s and MFU
    ... --json numbers.json                                # the printed numbers, also as JSON

Both sides train the same model shape (the preset's; the baseline is nanoGPT's GPT written out
below, with the same parameter count) on the same data: the preset's default SFT mix, rendered
with the same sampler call (``HLSM.sample_batch(...).tokens``) inside the timed loop, since any
real loop has to make its batches. The baseline is the nanoGPT training loop with nothing else:
targets with ignore_index=-1 for the prompt and the padding, AdamW, clipping, no eval, no logging,
no checkpoints. Ours is the full trainer (lr schedule, NaN check, metrics, DDP hooks), with its
evaluation and checkpointing pushed to the end and not timed. Tokens are the non-padding input
tokens; rates exclude ``warmup`` steps; both sides alternate ``repeats`` times and the best and
the median are reported (on a shared machine, best-of is the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hlsm.checkpoint import read_metrics
from hlsm.policy import Policy, PolicyConfig, autocast
from hlsm.sft import SFTConfig, data_streams, make_split, mix_counts, train
from hlsm.text import Tokenizer

# --- the baseline: nanoGPT's model, as plain as it comes ------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=False)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=False)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList([Block(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd, bias=False)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(cfg: SFTConfig, mcfg: PolicyConfig, warmup: int) -> float:
    """nanoGPT's train.py loop on the same batches; returns tokens/s after ``warmup`` steps."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = GPT(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    tok = Tokenizer()
    split = make_split(cfg.split)
    gens = data_streams(cfg, split)  # the streams (and so the batches) hlsm.sft.train reads
    counts = mix_counts(cfg.train_supports, cfg.batch_size)

    def get_batch(step):
        parts = [gens[n].sample_batch(c, step * c).tokens(tok)[:3] for n, c in counts.items()]
        width = max(ids.shape[1] for ids, _, _ in parts)
        ids = np.concatenate([np.pad(i, ((0, 0), (0, width - i.shape[1]))) for i, _, _ in parts])
        plen = np.concatenate([p for _, p, _ in parts])[:, None]
        total = np.concatenate([t for _, _, t in parts])[:, None]
        ids = torch.from_numpy(ids.astype(np.int64))
        j = np.arange(1, width)[None, :]  # target position j is token j
        y = ids[:, 1:].masked_fill(torch.from_numpy((j < plen) | (j >= total)), -1)
        return ids[:, :-1], y

    def get_lr(it):
        if it < cfg.warmup_steps:
            return cfg.lr * (it + 1) / cfg.warmup_steps
        min_lr = cfg.lr * cfg.min_lr_ratio
        decay_ratio = (it - cfg.warmup_steps) / (cfg.steps - cfg.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (cfg.lr - min_lr)

    tokens, t0 = 0, None
    for step in range(cfg.steps):
        if step == warmup:
            _sync(device)
            tokens, t0 = 0, time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = get_lr(step)
        x, y = get_batch(step)
        tokens += int((x != tok.pad_id).sum())
        x, y = x.to(device), y.to(device)
        with autocast(device):  # bf16 on CUDA, as nanoGPT and hlsm.sft
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return tokens / (time.perf_counter() - t0)


def ours(cfg: SFTConfig, warmup: int) -> float:
    """hlsm.sft.train; tokens/s from its metrics after ``warmup`` steps (eval and checkpoint untimed)."""
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d, progress=False)
        rows = [m for m in read_metrics(d) if "tokens_per_s" in m and m["step"] > warmup]
    # every log line covers log_every steps: the mean of the per-interval rates, weighted by time
    return len(rows) / sum(1.0 / m["tokens_per_s"] for m in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (bf16 autocast on CUDA, both sides)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak for MFU (default: 989 = H100 bf16 dense on CUDA; none on CPU)")
    ap.add_argument("--json", default="", help="also write the numbers to this file (bench/gpu.py reads it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SFTConfig.from_preset(args.preset, steps=args.steps, eval_every=0, ckpt_every=0, eval_n=1,
                                log_every=args.warmup, device=args.device)
    peak = args.peak_tflops if args.peak_tflops is not None else (989.0 if "cuda" in args.device else 0.0)
    mcfg = cfg.model_config()
    n_ours = sum(p.numel() for p in Policy(mcfg).parameters())
    n_plain = sum(p.numel() for p in GPT(mcfg).parameters())
    print(f"preset {args.preset}: {mcfg.n_layer} layers x {mcfg.n_embd} wide, {n_ours:,} params (baseline "
          f"{n_plain:,}); batch {cfg.batch_size}, {args.steps} steps ({args.warmup} warmup), "
          f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    a, b = [], []
    for r in range(args.repeats):  # alternate, so both sides see the same background load
        a.append(ours(cfg, args.warmup))
        b.append(plain_loop(cfg, mcfg, args.warmup))
        print(f"  repeat {r}: hlsm.sft {a[-1]:,.0f} tok/s   plain nanoGPT loop {b[-1]:,.0f} tok/s")
    med_a, med_b = statistics.median(a), statistics.median(b)
    print(f"hlsm.sft.train     best {max(a):10,.0f} tokens/s   median {med_a:10,.0f}")
    print(f"plain nanoGPT loop best {max(b):10,.0f} tokens/s   median {med_b:10,.0f}")
    print(f"ratio (ours / plain): best {max(a) / max(b):.2f}x, median {med_a / med_b:.2f}x")
    numbers = {"preset": args.preset, "device": args.device, "params": n_ours, "ours_best": max(a),
               "ours_median": med_a, "plain_best": max(b), "plain_median": med_b, "ratio_median": med_a / med_b}
    if peak:
        # nanoGPT's estimate of training FLOPs per token: 6N for the matmuls + 12 L d T for attention
        flops = 6 * n_ours + 12 * mcfg.n_layer * mcfg.n_embd * mcfg.block_size
        mfu = lambda tok_s: tok_s * flops / (peak * 1e12)
        print(f"MFU at {peak:g} TFLOP/s peak ({flops / 1e6:.1f} MFLOP/token): hlsm.sft {mfu(med_a):.2%}, "
              f"plain {mfu(med_b):.2%} (medians)")
        numbers.update(peak_tflops=peak, mfu_ours=mfu(med_a), mfu_plain=mfu(med_b))
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main()
