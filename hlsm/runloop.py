"""The run loop both trainers share: log, evaluate, snapshot, checkpoint, stop on NaN or on request.

    loop = Loop(out, steps=cfg.steps, start=start, log=log, dist=dist, eval_every=..., ckpt_every=...)
    done, metrics, rows = run_loop(loop, model, step_fn, evaluate_fn, state_fn)

``step_fn(k)`` trains step k (0-based) and returns its metrics (``{"step": k + 1, ...}``), or raises
``NonFiniteLossError`` before applying a non-finite update; the loop logs the event and re-raises
it naming the last good checkpoint. ``evaluate_fn(done, metrics, final)`` evaluates and returns
rows, ``state_fn(done)`` is the checkpoint payload, and ``stop_fn(metrics)`` may return a reason
to stop early (logged as an event; the stop is then the final step: evaluated, checkpointed).
``finished_run`` is what a resumed run that had already finished reports instead of training.
The trainers keep what differs (their step, their resume state) and clean up in ``finally``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hlsm.checkpoint import (
    CHECKPOINT,
    MetricsLog,
    NonFiniteLossError,
    same_eval,
    save_checkpoint,
    save_policy,
    snapshot_name,
)
from hlsm.distributed import DistInfo, barrier

PROGRESS_LINES = 20  # lines a progress bar writes when its output is not a terminal (one every 5%)


class _Lines:
    """What a progress bar writes, as whole lines: tqdm redraws in place with a carriage return, which
    a log file keeps as one endless line (or, read back, one line per update)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int, **kw):
    """A tqdm bar on stderr; when stderr is not a terminal (a log file, a pipe), one whole line every
    ``1 / PROGRESS_LINES`` of ``total`` instead of ~10 redraws a second."""
    import sys

    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, dynamic_ncols=True, **kw)
    return tqdm(total=total, file=_Lines(sys.stderr), mininterval=0, miniters=max(1, total // PROGRESS_LINES),
                ncols=100, **kw)


@dataclass
class Loop:
    out: Path  # run directory
    steps: int  # train steps [start, steps)
    start: int  # steps already done (from the checkpoint resumed)
    log: MetricsLog  # metrics.jsonl (enabled on the main rank only)
    dist: DistInfo  # ranks: only the main rank writes files
    eval_every: int  # evaluate every this many steps and at the end (0: only at the end)
    ckpt_every: int  # checkpoint every this many steps and at the end (0: only at the end)
    log_every: int = 1  # log the step's metrics every this many steps and at the end
    snapshot_every: int = 0  # keep the policy at step 0 and every this many steps (0: none)
    progress: bool = True  # a progress bar on the main rank
    desc: str = "train"  # the progress bar's label
    postfix: tuple = ()  # (label, metric name, format) of what the progress bar shows, in plain words
    last_good: Path | None = None  # the checkpoint a NaN stop names (updated as checkpoints are written)


def run_loop(loop: Loop, model, step_fn, evaluate_fn, state_fn, stop_fn=None) -> tuple[int, dict, list]:
    """Run steps ``loop.start .. loop.steps - 1``; returns (steps done, last metrics, last eval rows)."""
    from tqdm import tqdm

    main = loop.dist.is_main
    if loop.snapshot_every and main and loop.start == 0:
        save_policy(loop.out, model, {"step": 0}, name=snapshot_name(0))
    bar = progress_bar(total=loop.steps, initial=loop.start, disable=not (loop.progress and main), desc=loop.desc)
    done, metrics, rows = loop.start, {}, []
    try:
        for k in range(loop.start, loop.steps):
            try:
                metrics = step_fn(k)
            except NonFiniteLossError as e:
                if main:
                    loop.log.log({"step": e.step, "event": "non-finite loss", "loss": str(e.value)})
                raise NonFiniteLossError(e.step, e.value, loop.last_good) from None
            done = k + 1
            bar.update(1)
            bar.set_postfix_str(", ".join(f"{label} {metrics[name]:{fmt}}" for label, name, fmt in loop.postfix
                                          if name in metrics), refresh=False)
            if done % loop.log_every == 0 or done == loop.steps:
                loop.log.log(metrics)
            why = stop_fn(metrics) if stop_fn else None
            if why and main:
                loop.log.log({"step": done, "event": why})
                tqdm.write(f"{loop.out}: {why}")
            final = done == loop.steps or bool(why)
            if loop.snapshot_every and main and (final or done % loop.snapshot_every == 0):
                save_policy(loop.out, model, {"step": done}, name=snapshot_name(done))
            if final or (loop.eval_every and done % loop.eval_every == 0):
                rows = evaluate_fn(done, metrics, final)
            if final or (loop.ckpt_every and done % loop.ckpt_every == 0):
                if main:
                    save_checkpoint(loop.out / CHECKPOINT, state_fn(done))
                loop.last_good = loop.out / CHECKPOINT
                barrier(loop.dist)
            if why:
                break
    finally:
        bar.close()
    return done, metrics, rows


def finished_run(out: Path, config: dict, log: MetricsLog, key: str, main: bool, evaluate_fn,
                 steps: int) -> tuple[dict, list]:
    """(last metrics, eval rows) of a resumed run that had already finished: the last logged line
    holding ``key``, and its eval.csv if made with these evaluation settings, else a new final one."""
    from hlsm.evaluate import read_csv

    metrics = next((m for m in reversed(log.read()) if key in m), {})
    if same_eval(out, config):
        return metrics, (read_csv(out / "eval.csv") if main else [])
    return metrics, evaluate_fn(steps, metrics, final=True)


def eval_line(rows, step: int, head: str = "") -> tuple[dict, str]:
    """(the ``eval/<support>`` metrics, the line printed) of an evaluation's "all" rows at ``step``;
    ``head`` is the trainer's own number (``"loss 1.2345 "``, ``"reward 0.500 "``)."""
    accs = {r["support"]: r["answer"] for r in rows if r["by"] == "all"}
    text = " ".join(f"{k} {v:.3f}" for k, v in accs.items())
    return {f"eval/{k}": v for k, v in accs.items()}, f"step {step}: {head}| acc {text}"
