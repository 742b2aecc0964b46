"""Supervised fine-tuning on HLSM traces: token NLL on the completion, the prompt masked.

    cfg = SFTConfig.from_preset("cpu", steps=2000)
    result = train(cfg, "runs/sft-cpu")            # resume=True continues a killed run
    result.model, result.rows                      # the trained Policy and its final eval table

CLI: ``python -m hlsm.sft --preset cpu --out runs/x [--steps N] [--lr 1e-3] [--resume] ...``;
under ``torchrun --nproc_per_node=N`` it runs data-parallel (each rank takes its slice of the
global batch). Every ``SFTConfig`` field is a flag; dicts and tuples are given as JSON.

Data: each training support s of the split has its own stream ``HLSM(support=s, seed=seed,
stream=hlsm.names.train_stream(s))`` and a fixed share n_s of every batch (by ``train_supports``
weights), and step k (0-based) takes its items [k * n_s, (k + 1) * n_s). A batch is a pure function
of k, so a resumed run sees exactly the data an uninterrupted one would. GRPO draws its prompts
from the same stream, so SFT on {s: 1.0} with batch_size P sees GRPO's step-k prompts at step k.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hlsm.checkpoint import (
    MetricsLog,
    NonFiniteLossError,
    init_run,
    load_checkpoint,
    load_policy,
    rng_state,
    same_eval,
    save_policy,
    seed_everything,
    set_rng_state,
    start_step,
)
from hlsm.cli import build_config, given_config, trainer_parser
from hlsm.distributed import all_reduce_sum, barrier, cleanup, init_distributed, shard, wrap_ddp
from hlsm.model import HLSM
from hlsm.names import ATOMS, EVAL_ATOMS, SEEN, SFT, UNSEEN, train_stream
from hlsm.policy import PRESETS, Policy, PolicyConfig, autocast
from hlsm.presets import SFT_PRESETS  # training defaults per preset name (beside its model shape)
from hlsm.runloop import Loop, eval_line, run_loop
from hlsm.support import DEFAULT_SPLIT, Split
from hlsm.support import make_split as support_make_split
from hlsm.text import FORMATS, Tokenizer

# Keys that may change when resuming (they do not change the trajectory).
RESUME_MAY_CHANGE = ("device", "eval_every", "eval_n", "ckpt_every", "log_every", "compile")


def make_split(spec) -> Split:
    """A Split from a Split, a ``Split.to_dict()`` dict, or {"factory": name, **kwargs}."""
    return support_make_split(spec, "SFTConfig.split")


@dataclass
class SFTConfig:
    """Every knob of an SFT run; ``validate`` checks them all up front (ValueError naming the field)."""

    preset: str = "smoke"  # model shape and training defaults (hlsm.presets: MODEL_PRESETS, SFT_PRESETS)
    init: str = ""  # run directory whose policy starts this run (continued SFT); "": random init
    model: dict = field(default_factory=dict)  # PolicyConfig overrides, e.g. {"pos": "rope", "dropout": 0.1}
    split: dict | Split = field(default_factory=lambda: dict(DEFAULT_SPLIT))  # see make_split
    train_supports: dict = field(default_factory=lambda: {SFT: 1.0, ATOMS: 0.25})  # name -> batch share
    eval_supports: tuple = (SEEN, UNSEEN, EVAL_ATOMS)  # evaluation supports of the split scored during training
    fmt: str = "values"  # trace format: explicit | values | answer
    granularity: int = 1  # steps per shown trace chunk
    steps: int = 300  # optimizer updates
    batch_size: int = 32  # sequences per update, all ranks together
    micro_batch_size: int = 0  # rows per forward/backward on one rank, grouped by length (0: all at once)
    lr: float = 3e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 20  # linear warmup from 0 over this many updates
    weight_decay: float = 0.1  # AdamW decay on weight matrices (not norms or biases)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping; the norm is logged anyway)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (softer SFT policies for RL)
    eval_every: int = 100  # evaluate every this many updates and at the end (0: only at the end)
    eval_n: int = 128  # items per eval support (greedy exact-answer accuracy)
    ckpt_every: int = 100  # checkpoint every this many updates and at the end (0: only at the end)
    log_every: int = 10  # write a metrics line every this many updates
    seed: int = 0  # seeds model init, dropout and the data streams
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model for training (off on CPU by default)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> SFTConfig:
        if name not in SFT_PRESETS:
            raise ValueError(f"SFTConfig.preset: unknown preset {name!r}; allowed: {', '.join(SFT_PRESETS)}")
        return cls(**{"preset": name, **SFT_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(d["split"], Split):
            d["split"] = d["split"].to_dict()
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> SFTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SFTConfig fields {sorted(unknown)}")
        d = dict(d)
        if "eval_supports" in d:
            d["eval_supports"] = tuple(d["eval_supports"])
        return cls(**d)

    def model_config(self) -> PolicyConfig:
        if self.init:  # continued SFT keeps the shape of the policy it starts from
            path = Path(self.init) / "policy.pt"
            if not path.exists():
                raise ValueError(f"SFTConfig.init: {self.init!r} is not a finished run (no {path.name})")
            return PolicyConfig(**load_checkpoint(path)["model_config"])
        if self.preset not in PRESETS:
            allowed = ", ".join(PRESETS)
            raise ValueError(f"SFTConfig.preset: unknown model preset {self.preset!r}; allowed: {allowed}")
        try:
            return PolicyConfig.preset(self.preset, **self.model)
        except TypeError as e:
            raise ValueError(f"SFTConfig.model: {e}") from None

    def validate(self) -> SFTConfig:
        def bad(name, why):
            raise ValueError(f"SFTConfig.{name}: {why}, got {getattr(self, name)!r}")

        for name in ("steps", "batch_size", "eval_n", "log_every", "granularity"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be an integer >= 1")
        for name in ("micro_batch_size", "warmup_steps", "eval_every", "ckpt_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "must be an integer >= 0")
        for name in ("lr", "weight_decay", "grad_clip", "label_smoothing", "min_lr_ratio", "beta1", "beta2"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if self.lr == 0:
            bad("lr", "must be > 0")
        for name in ("label_smoothing", "beta1", "beta2"):
            if getattr(self, name) >= 1:
                bad(name, "must be < 1")
        if self.min_lr_ratio > 1:
            bad("min_lr_ratio", "must be <= 1")
        if self.fmt not in FORMATS:
            bad("fmt", f"must be one of {', '.join(FORMATS)}")
        self.model_config()
        split = make_split(self.split)
        if not isinstance(self.train_supports, dict) or not self.train_supports:
            bad("train_supports", "must be a non-empty dict {support name: weight}")
        for name, w in self.train_supports.items():
            if name not in split.train:
                have = sorted(split.train)
                bad("train_supports", f"{name!r} is not a training support of the split (have {have})")
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                bad("train_supports", f"weight of {name!r} must be a finite number > 0")
        for name in self.eval_supports:
            if name not in split.eval:
                bad("eval_supports", f"{name!r} is not an evaluation support of the split "
                    f"(have {sorted(split.eval)}; training supports are never scored as held out)")
        counts = mix_counts(self.train_supports, self.batch_size)
        if min(counts.values()) == 0:
            bad("batch_size", f"too small to give every training support an item per batch ({counts})")
        for name in (*self.train_supports, *self.eval_supports):
            try:
                HLSM(support=split.support(name), seed=self.seed, fmt=self.fmt, granularity=self.granularity)
            except ValueError as e:
                field_name = "train_supports" if name in self.train_supports else "eval_supports"
                raise ValueError(f"SFTConfig.{field_name}: support {name!r} has no examples: {e}") from None
        split.check_disjoint()  # LeakageError (a ValueError) if an eval item could occur in training
        return self


# --- pieces ---------------------------------------------------------------------------------


def data_streams(cfg: SFTConfig, split: Split) -> dict[str, HLSM]:
    """support name -> the stream SFT draws it from (``hlsm.names.train_stream``, GRPO's too)."""
    return {
        name: HLSM(support=split.train[name], seed=cfg.seed, fmt=cfg.fmt, granularity=cfg.granularity,
                   stream=train_stream(name))
        for name in cfg.train_supports
    }


def mix_counts(weights: dict[str, float], batch_size: int) -> dict[str, int]:
    """Items per batch for each support: proportional to its weight, largest remainder rounding."""
    total = sum(weights.values())
    raw = {k: batch_size * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    by_remainder = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(weights).index(k)))
    for k in by_remainder[: batch_size - sum(counts.values())]:
        counts[k] += 1
    return counts


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - min_lr)


def encode_examples(tok: Tokenizer, examples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (n, T) padded, prompt_len (n,), total (n,)) of <bos> prompt completion <eos> rows."""
    rows, plens = zip(*(tok.encode_item(ex) for ex in examples))
    plen = np.array(plens, dtype=np.int64)
    total = np.array([len(r) for r in rows], dtype=np.int64)
    ids = np.full((len(rows), int(total.max())), tok.pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, plen, total


def render(gen: HLSM, n: int, start: int, tok: Tokenizer):
    """Items [start, start + n) of a stream as (ids, prompt_len, total) token arrays."""
    if gen.granularity == 1:
        return gen.sample_batch(n, start).tokens(tok)[:3]
    return encode_examples(tok, gen.sample(n, start))


def make_batch(parts, pad_id: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs x, targets y and the loss mask (completion tokens, <eos> included), each (n, T - 1).

    ``parts`` is a list of (ids, prompt_len, total) arrays. Target position j is token j + 1; it
    counts iff prompt_len <= j + 1 < total: the prompt and the padding are masked.
    """
    width = max(p[0].shape[1] for p in parts)
    if width - 1 > block_size:
        raise ValueError(
            f"a training sequence has {width} tokens but the model's block_size is {block_size} "
            f"(raise SFTConfig.model block_size or use a smaller preset's data)"
        )
    ids = np.full((sum(len(a) for a, _, _ in parts), width), pad_id, dtype=np.int64)
    row = 0
    for a, _, _ in parts:
        ids[row : row + len(a), : a.shape[1]] = a
        row += len(a)
    plen = np.concatenate([p for _, p, _ in parts])
    total = np.concatenate([t for _, _, t in parts])
    ids = torch.from_numpy(ids)
    j = torch.arange(1, width)[None, :]
    mask = (j >= torch.from_numpy(plen)[:, None]) & (j < torch.from_numpy(total)[:, None])
    return ids[:, :-1], ids[:, 1:], mask


def local_batch(streams: dict, counts: dict, step: int, lo: int, hi: int, tok: Tokenizer, block_size: int):
    """Rows [lo, hi) of step ``step``'s global batch, as ``make_batch`` tensors.

    The global batch lays the supports' shares end to end: support s contributes its stream's
    items [step * n_s, (step + 1) * n_s). One process takes [0, batch_size); DDP rank r its shard.
    """
    parts, offset = [], 0
    for name, c in counts.items():
        a, b = max(lo, offset), min(hi, offset + c)
        if a < b:
            parts.append(render(streams[name], b - a, step * c + (a - offset), tok))
        offset += c
    return make_batch(parts, tok.pad_id, block_size)


def micro_batches(x: torch.Tensor, pad_id: int, size: int) -> list[tuple[torch.Tensor, int]]:
    """Rows of ``x`` sorted by length, cut into groups of ``size``, each with its own width.

    Gradient accumulation over these sums the same token losses as one pass over the padded batch
    but spends no compute on the padding a short row would carry next to a long one.
    """
    length = (x != pad_id).sum(1)  # real tokens are never pad_id, and padding only trails
    return [(rows, int(length[rows].max())) for rows in torch.argsort(length, stable=True).split(size)]


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, label_smoothing: float = 0.0):
    """Sum over the masked positions of the token cross-entropy (divide by the token count outside)."""
    nll = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), reduction="none", label_smoothing=label_smoothing
    )
    return (nll * mask.flatten().to(nll.dtype)).sum()


@dataclass
class SFTResult:
    model: Policy  # the trained policy (eval mode, on the training device)
    step: int  # updates done
    loss: float  # last logged training loss
    rows: list  # final evaluation table (hlsm.evaluate rows) on eval_supports
    out: Path  # run directory


def train(cfg: SFTConfig, out: str | Path, resume: bool = False, progress: bool = True,
          snapshot_every: int = 0) -> SFTResult:
    """Run (or with ``resume``, continue) SFT into the run directory ``out``.

    ``snapshot_every`` > 0 also keeps the policy at step 0 and every that many steps under
    ``out/snapshots/`` (not part of the config: it does not change the run).
    """
    cfg.validate()
    dist = init_distributed(cfg.device)
    try:  # under torchrun, an error anywhere must not leak the process group
        return _train(cfg, Path(out), resume, progress, snapshot_every, dist)
    finally:
        cleanup(dist)


def _train(cfg: SFTConfig, out: Path, resume: bool, progress: bool, snapshot_every: int, dist) -> SFTResult:
    from tqdm import tqdm

    from hlsm.evaluate import evaluate, read_csv, write_csv

    device, main = dist.device, dist.is_main
    if main:
        init_run(out, cfg.to_dict(), resume=resume, ignore=RESUME_MAY_CHANGE)
    barrier(dist)
    log = MetricsLog(out, enabled=main)
    tok = Tokenizer()
    split = make_split(cfg.split)
    streams = data_streams(cfg, split)
    counts = mix_counts(cfg.train_supports, cfg.batch_size)
    lo, hi = shard(cfg.batch_size, dist)

    seed_everything(cfg.seed)  # same init on every rank
    mcfg = cfg.model_config()
    model = Policy(mcfg).to(device)
    if cfg.init:
        model.load_state_dict(load_policy(cfg.init)[0].state_dict())
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    start = 0
    ckpt = start_step(out, resume, log, main)
    if ckpt is not None:
        state = load_checkpoint(ckpt)  # on CPU: load_state_dict moves weights and optimizer state
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        if dist.enabled:
            seed_everything(cfg.seed * 1_000_003 + 7919 * start + dist.rank)
        else:
            set_rng_state(state["rng"])
        log.truncate(start)
    elif dist.enabled:
        seed_everything(cfg.seed * 1_000_003 + dist.rank)  # different dropout masks per rank

    net = wrap_ddp(model, dist)
    fwd = torch.compile(net, dynamic=True) if cfg.compile else net  # widths vary per batch
    micro = cfg.micro_batch_size or (hi - lo)

    def step_fn(step: int) -> dict:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y, mask = local_batch(streams, counts, step, lo, hi, tok, mcfg.block_size)
        chunks = micro_batches(x, tok.pad_id, micro)
        tokens = int((x != tok.pad_id).sum()) * dist.world_size
        x, y, mask = x.to(device), y.to(device), mask.to(device)
        n_tok = all_reduce_sum(mask.sum().to(torch.float64), dist)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, (rows, width) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not dist.enabled else net.no_sync()
            rows = rows.to(device)
            with sync:
                with autocast(device):
                    logits = fwd(x[rows, :width])
                loss = sft_loss(logits, y[rows, :width], mask[rows, :width], cfg.label_smoothing)
                # DDP averages gradients over ranks: scale so the result is the global token mean
                (loss * (dist.world_size / n_tok)).backward()
            loss_sum += loss.detach()
        loss_value = (all_reduce_sum(loss_sum, dist) / n_tok).item()
        if not math.isfinite(loss_value):
            opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step + 1, loss_value, None)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        # tokens/s of this step alone (data, forward, backward, update; evaluations not included)
        return {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tokens / (time.perf_counter() - t0)}

    def evaluate_fn(step: int, metrics: dict, final: bool = False) -> list:
        rows = []
        if main:
            rows = evaluate(model, split, cfg.eval_supports, n=cfg.eval_n, seed=cfg.seed, fmt=cfg.fmt,
                            granularity=cfg.granularity)
            values, line = eval_line(rows, step, f"loss {metrics.get('loss', float('nan')):.4f} ")
            log.log({"step": step, **values})
            if progress:
                tqdm.write(line)
            if final:
                write_csv(rows, out / "eval.csv")
        barrier(dist)
        return rows

    def state_fn(step: int) -> dict:
        return {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
                "model_config": mcfg.to_dict(), "config": cfg.to_dict()}

    loop = Loop(out, cfg.steps, start, log, dist, cfg.eval_every, cfg.ckpt_every, cfg.log_every, snapshot_every,
                progress, "sft", ("loss", "lr"), last_good=ckpt)
    _, metrics, rows = run_loop(loop, model, step_fn, evaluate_fn, state_fn)
    loss_value = metrics.get("loss", float("nan"))
    if start >= cfg.steps:  # resumed a finished run: report it; evaluate again only if asked differently
        loss_value = next((m["loss"] for m in reversed(log.read()) if "loss" in m), loss_value)
        if same_eval(out, cfg.to_dict()):
            rows = read_csv(out / "eval.csv") if main else []
        else:
            rows = evaluate_fn(cfg.steps, {"loss": loss_value}, final=True)
    if main:
        save_policy(out, model, {"step": cfg.steps, "config": cfg.to_dict()})
    barrier(dist)
    model.eval()
    return SFTResult(model, cfg.steps, loss_value, rows, out)


# --- command line ---------------------------------------------------------------------------


def main(argv=None) -> int:
    p = trainer_parser("python -m hlsm.sft", __doc__, SFTConfig, SFT_PRESETS,
                       choices={"preset": SFT_PRESETS, "fmt": FORMATS})
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    given = given_config(args, SFTConfig)
    cfg = build_config(p, lambda: SFTConfig.from_preset(given.pop("preset", "smoke"), **given), args.out,
                       args.resume)
    try:
        result = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.rows:  # rank 0 (the only rank that evaluates)
        _, line = eval_line(result.rows, result.step, f"loss {result.loss:.4f} ")
        print(f"done: {line} -> {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
