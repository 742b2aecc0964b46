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
With ``items_from`` (the labelled control of a dynamic-sampling GRPO run) that run's support
contributes at step k the items it kept at step k instead, as many as it kept.

Files: ``hlsm.sft_config`` holds ``SFTConfig`` and its checks (with ``make_split``, ``mix_counts``);
this module the batch pieces, the ``SFTTrainer`` (one update, one evaluation, the checkpoint) and
``train``. Every name is importable from here.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
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
    save_policy,
    seed_everything,
    set_rng_state,
    start_step,
)
from hlsm.cli import build_config, given_config, trainer_parser
from hlsm.distributed import all_reduce_sum, barrier, cleanup, init_distributed, shard, wrap_ddp
from hlsm.model import HLSM
from hlsm.names import train_stream
from hlsm.policy import Policy, autocast
from hlsm.runloop import Loop, eval_line, finished_run, run_loop
from hlsm.sft_config import SFT_PRESETS, SFTConfig, make_split, mix_counts  # noqa: F401 -- re-exported
from hlsm.support import Split
from hlsm.text import FORMATS, Tokenizer

# Keys that may change when resuming (they do not change the trajectory).
RESUME_MAY_CHANGE = ("device", "eval_every", "eval_n", "ckpt_every", "log_every", "compile")


# --- pieces ---------------------------------------------------------------------------------


def data_streams(cfg: SFTConfig, split: Split) -> dict[str, HLSM]:
    """support name -> the stream SFT draws it from (``hlsm.names.train_stream``, GRPO's too)."""
    return {
        name: HLSM(support=split.train[name], seed=cfg.seed, **cfg.format_kw(name), stream=train_stream(name))
        for name in cfg.train_supports
    }


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


def local_batch(streams: dict, counts: dict, step: int, lo: int, hi: int, tok: Tokenizer, block_size: int,
                skip: int = 0, picked: dict | None = None):
    """Rows [lo, hi) of step ``step``'s global batch, as ``make_batch`` tensors.

    The global batch lays the supports' shares end to end: support s contributes its stream's
    items [skip + step * n_s, skip + (step + 1) * n_s). One process takes [0, batch_size); DDP rank
    r its shard. ``skip`` is ``SFTConfig.data_offset``. ``picked`` {support: stream indices} gives
    a support's items of this step instead (``SFTConfig.items_from``: the kept prompts of a GRPO step,
    any number); a batch with no rows at all is None.
    """
    picked = picked or {}
    parts, offset = [], 0
    for name, c in counts.items():
        c = len(picked[name]) if name in picked else c
        a, b = max(lo, offset), min(hi, offset + c)
        if a < b and name in picked:
            parts.append(encode_examples(tok, [streams[name][i] for i in picked[name][a - offset : b - offset]]))
        elif a < b:
            parts.append(render(streams[name], b - a, skip + step * c + (a - offset), tok))
        offset += c
    return make_batch(parts, tok.pad_id, block_size) if parts else None


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
    log = MetricsLog(out, enabled=dist.is_main)
    try:  # under torchrun, an error anywhere must not leak the process group
        return _train(cfg, Path(out), resume, progress, snapshot_every, dist, log)
    finally:
        log.close()  # complete event files, even of a killed run; no writer thread outlives the run
        cleanup(dist)


def _train(cfg: SFTConfig, out: Path, resume: bool, progress: bool, snapshot_every: int, dist,
           log: MetricsLog) -> SFTResult:
    main = dist.is_main
    if main:
        init_run(out, cfg.to_dict(), resume=resume, ignore=RESUME_MAY_CHANGE)
    barrier(dist)
    run = SFTTrainer(cfg, out, log, dist, progress)
    start, ckpt = run.resume(resume)
    loop = Loop(out, cfg.steps, start, log, dist, cfg.eval_every, cfg.ckpt_every, cfg.log_every, snapshot_every,
                progress, "sft", (("loss", "loss", ".4g"), ("lr", "lr", ".2g")), last_good=ckpt)
    _, metrics, rows = run_loop(loop, run.model, run.step, run.evaluate, run.state)
    if start >= cfg.steps:  # resumed a finished run: report it; evaluate again only if asked differently
        metrics, rows = finished_run(out, cfg.to_dict(), log, "loss", main, run.evaluate, cfg.steps)
    if main:
        save_policy(out, run.model, {"step": cfg.steps, "config": cfg.to_dict()})
    barrier(dist)
    run.model.eval()
    return SFTResult(run.model, cfg.steps, metrics.get("loss", float("nan")), rows, out)


class SFTTrainer:
    """One SFT run's data, policy and optimizer; ``step``, ``evaluate`` and ``state`` are the three
    callbacks of ``hlsm.runloop.run_loop`` (one update, one evaluation, the checkpoint payload).

    The constructor and ``resume`` run in a fixed order that the RNG depends on (seed, init, then
    the resumed or per-rank state): a resumed run must continue exactly as an uninterrupted one.
    """

    def __init__(self, cfg: SFTConfig, out: Path, log: MetricsLog, dist, progress: bool = True):
        self.cfg, self.out, self.log, self.dist, self.progress = cfg, out, log, dist, progress
        self.tok = Tokenizer()
        self.split = make_split(cfg.split)
        self.streams = data_streams(cfg, self.split)
        self.counts = mix_counts(cfg.train_supports, cfg.batch_size)
        self.lo, self.hi = shard(cfg.batch_size, dist)
        seed_everything(cfg.seed)  # same init on every rank
        self.mcfg = cfg.model_config()
        self.model = Policy(self.mcfg).to(dist.device)
        if cfg.init:
            self.model.load_state_dict(load_policy(cfg.init)[0].state_dict())
        self.opt = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        self.micro = cfg.micro_batch_size or (self.hi - self.lo)
        self.picked = None  # items_from: (support, its items of each step)
        if cfg.items_from:
            if dist.enabled:  # a step's batch is any size: no equal shares
                raise ValueError(f"SFTConfig.items_from: runs in one process only, not over {dist.world_size} ranks")
            self.picked = cfg.followed(self.split)
        self.net = self.fwd = None  # set by resume: DDP must wrap the weights the run continues from

    def resume(self, resume: bool) -> tuple[int, Path | None]:
        """(the step to start at, the checkpoint it continues or None); seeds each rank, wraps DDP."""
        cfg, dist = self.cfg, self.dist
        start = 0
        ckpt = start_step(self.out, resume, self.log, dist.is_main)
        if ckpt is not None:
            state = load_checkpoint(ckpt)  # on CPU: load_state_dict moves weights and optimizer state
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            start = state["step"]
            if dist.enabled:
                seed_everything(cfg.seed * 1_000_003 + 7919 * start + dist.rank)
            else:
                set_rng_state(state["rng"])
            self.log.truncate(start)
        elif dist.enabled:
            seed_everything(cfg.seed * 1_000_003 + dist.rank)  # different dropout masks per rank
        self.net = wrap_ddp(self.model, dist)
        self.fwd = torch.compile(self.net, dynamic=True) if cfg.compile else self.net  # widths vary per batch
        return start, ckpt

    def batch(self, step: int):
        """This rank's rows of step ``step``'s batch (x, y, mask), or None when it holds no item."""
        picked = {self.picked[0]: self.picked[1][step]} if self.picked else None
        return local_batch(self.streams, self.counts, step, self.lo, self.hi, self.tok, self.mcfg.block_size,
                           self.cfg.data_offset, picked)

    def step(self, step: int) -> dict:
        """Update ``step`` (0-based) on this rank's rows of its batch; the metrics line of the step.

        With ``items_from`` the line adds ``items`` (the batch's rows); a step whose GRPO step kept no
        group (and with no other support) has none: it takes no update and logs a NaN loss.
        """
        t0 = time.perf_counter()
        lr = lr_at(step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        batch = self.batch(step)
        extra = {"items": 0 if batch is None else len(batch[0])} if self.picked else {}
        if batch is None:
            return {"step": step + 1, "loss": float("nan"), "lr": lr, "grad_norm": 0.0, "tokens_per_s": 0.0, **extra}
        x, y, mask = batch
        chunks = micro_batches(x, self.tok.pad_id, self.micro)
        tokens = int((x != self.tok.pad_id).sum()) * self.dist.world_size
        loss_value = self._backward(x, y, mask, chunks)
        if not math.isfinite(loss_value):
            self.opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step + 1, loss_value, None)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        # tokens/s of this step alone (data, forward, backward, update; evaluations not included)
        return {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": tokens / (time.perf_counter() - t0), **extra}

    def _backward(self, x, y, mask, chunks) -> float:
        """Accumulate over the micro-batches ``chunks`` the gradient of the global token-mean loss; that loss."""
        dist, device = self.dist, self.dist.device
        x, y, mask = x.to(device), y.to(device), mask.to(device)
        n_tok = all_reduce_sum(mask.sum().to(torch.float64), dist)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for i, (rows, width) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not dist.enabled else self.net.no_sync()
            rows = rows.to(device)
            with sync:
                with autocast(device):
                    logits = self.fwd(x[rows, :width])
                loss = sft_loss(logits, y[rows, :width], mask[rows, :width], self.cfg.label_smoothing)
                # DDP averages gradients over ranks: scale so the result is the global token mean
                (loss * (dist.world_size / n_tok)).backward()
            loss_sum += loss.detach()
        return (all_reduce_sum(loss_sum, dist) / n_tok).item()

    def evaluate(self, step: int, metrics: dict, final: bool = False) -> list:
        """Greedy accuracy on ``eval_supports`` (rank 0; the others wait and get [])."""
        from tqdm import tqdm

        from hlsm.evaluate import evaluate, write_csv

        cfg, rows = self.cfg, []
        if self.dist.is_main:
            rows = evaluate(self.model, self.split, cfg.eval_supports, n=cfg.eval_n, seed=cfg.seed, fmt=cfg.fmt,
                            granularity=cfg.granularity, formats=cfg.formats)
            values, line = eval_line(rows, step, f"loss {metrics.get('loss', float('nan')):.4f} ")
            self.log.log({"step": step, **values})
            if self.progress:
                tqdm.write(line)
            if final:
                write_csv(rows, self.out / "eval.csv")
        barrier(self.dist)
        return rows

    def state(self, step: int) -> dict:
        """The checkpoint payload after ``step`` updates (``resume`` reads it back)."""
        return {"step": step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "rng": rng_state(), "model_config": self.mcfg.to_dict(), "config": self.cfg.to_dict()}


# --- command line ---------------------------------------------------------------------------


def main(argv=None) -> int:
    p = trainer_parser("python -m hlsm.sft", __doc__, SFTConfig, SFT_PRESETS,
                       choices={"preset": SFT_PRESETS, "fmt": FORMATS})
    args = p.parse_args(argv)
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
