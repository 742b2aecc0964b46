"""GRPO on the HLSM: group-relative policy optimization from an SFT checkpoint.

Each step draws P prompts from an RL support (step k uses items [k*P, (k+1)*P) of the stream
``hlsm.names.train_stream(rl_support)``, the one SFT on that support reads as well), samples G
completions per prompt at the sampling temperature, scores them with named, weighted rewards from
``hlsm.text.REWARDS``, turns rewards into group-relative advantages and takes ``epochs x
minibatches`` clipped policy-gradient updates, with an optional k3 KL to a frozen reference and an
optional replay NLL term on labelled SFT data. With ``dynamic_sampling`` (DAPO) a step drops the
groups whose rewards tie and draws P more prompts (the next items of the stream, from a prompt cursor
kept in the checkpoint) until P groups are kept or ``max_draws`` draws are spent.

    cfg = GRPOConfig.from_preset("cpu", init="runs/sft")
    result = train(cfg, "runs/grpo")               # resume=True continues a killed run
    result.model, result.rows, result.metrics      # the trained Policy, its final eval table, last step

One idea per file, all importable from here: ``hlsm.grpo_config`` (``GRPOConfig`` and its checks),
``hlsm.grpo_trainer`` (``GRPO``: rollout, updates, metrics of one step; ``sampled_reward``),
``hlsm.grpo_loss`` (the math as small pure functions, each tested on hand-computed values), and
this file: a run (``train``: load the SFT run, evaluate, checkpoint, resume) and its command line.
Step k's randomness is a pure function of (seed, k): resuming from a checkpoint (weights +
optimizer, + the prompt cursor with dynamic sampling) is bit-identical on CPU. A NaN/inf loss stops
the run before the update (``NonFiniteLossError`` names the step and the last good checkpoint).

CLI: ``python -m hlsm.grpo --init runs/sft --out runs/grpo [--preset cpu] [--steps N] ...``
(every ``GRPOConfig`` field is a flag; dicts and tuples as JSON; ``--resume`` continues a run);
under ``torchrun`` it runs data-parallel (DDP, gloo on CPU), each rank sampling P / world prompts
with its rows of the global batch's sampling noise, so N ranks end where 1 process ends (to float
tolerance; replay matches when replay_fraction * P splits evenly over the ranks).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hlsm.checkpoint import (
    CONFIG,
    MetricsLog,
    NonFiniteLossError,
    init_run,
    load_checkpoint,
    load_policy,
    read_config,
    run_formats,
    save_policy,
    start_step,
)
from hlsm.cli import build_config, given_config, trainer_parser
from hlsm.distributed import barrier, cleanup, init_distributed
from hlsm.grpo_config import GRPO_PRESETS, GRPOConfig  # noqa: F401 -- re-exported: hlsm.grpo.GRPOConfig, ...
from hlsm.grpo_loss import (  # noqa: F401 -- the math, re-exported: hlsm.grpo.compute_group_advantages, ...
    LOSS_AGGREGATIONS,
    OBJECTIVES,
    aggregate_loss,
    clipped_policy_loss,
    combined_rewards,
    compute_group_advantages,
    k3_kl,
    masked_mean,
    replay_window,
    rft_advantages,
)
from hlsm.grpo_trainer import GRPO, STATS, SUMMED, Rollout, sampled_reward  # noqa: F401 -- re-exported
from hlsm.runloop import Loop, eval_line, finished_run, run_loop

# --- a run ----------------------------------------------------------------------------------

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
    cfg.validate()
    dist = init_distributed(cfg.device)
    main, out = dist.is_main, Path(out)
    log = MetricsLog(out, enabled=main)
    try:
        model, _, fmt, gran = load_init(cfg.init, dist.device)
        split = run_split(cfg)
        cfg.check_split(split)
        trainer = GRPO(cfg, model, split, fmt, gran, dist, formats=run_formats(cfg.init)["formats"])
        if main:
            init_run(out, cfg.to_dict(), resume=resume, ignore=RESUME_MAY_CHANGE)
        barrier(dist)
        ckpt = start_step(out, resume, log, main)
        start = trainer.load_state_dict(load_checkpoint(ckpt, dist.device)) if ckpt else 0
        log.truncate(start)
        evaluate_fn = _evaluator(cfg, trainer, split, fmt, gran, log, out, dist, progress)
        if start == 0:
            evaluate_fn(0, {})  # the base policy: p0 per support and per module before RL
        loop = Loop(out, cfg.steps, start, log, dist, cfg.eval_every, cfg.ckpt_every, cfg.log_every,
                    snapshot_every, progress, "grpo",
                    (("reward", "reward_mean", ".3f"), ("tied groups", "zero_std_frac", ".0%")), last_good=ckpt)
        done, metrics, rows = run_loop(loop, trainer.model, trainer.step, evaluate_fn, trainer.state_dict,
                                       _dead_stop(cfg))
        if start >= cfg.steps:  # resumed a finished run: report it; evaluate again only if asked differently
            metrics, rows = finished_run(out, cfg.to_dict(), log, "reward_mean", main, evaluate_fn, cfg.steps)
        if main:
            save_policy(out, trainer.model, {"step": done, "config": cfg.to_dict()})
        barrier(dist)
    finally:
        log.close()  # complete event files, even of a killed run; no writer thread outlives the run
        cleanup(dist)
    return GRPOResult(trainer.model, done, metrics, rows, out)


def _evaluator(cfg: GRPOConfig, trainer: GRPO, split, fmt: str, gran: int, log: MetricsLog, out: Path, dist,
               progress: bool):
    """``run_loop``'s evaluate_fn: greedy accuracy on rank 0, by module too at step 0 and at the end
    (kept as eval_init.csv and eval.csv); the other ranks wait and get []."""
    from tqdm import tqdm

    from hlsm.evaluate import evaluate, write_csv

    def evaluate_fn(step: int, metrics: dict, final: bool = False) -> list:
        rows = []
        if dist.is_main:
            rows = evaluate(trainer.model, split, cfg.eval_supports, n=cfg.eval_n, seed=cfg.seed, fmt=fmt,
                            granularity=gran, formats=trainer.formats,
                            by=("all", "module") if final or step == 0 else ("all",))
            values, line = eval_line(rows, step, _reward_head(metrics))
            log.log({"step": step, **values})
            if progress:
                tqdm.write(line)
            if final or step == 0:
                write_csv(rows, out / ("eval.csv" if final else "eval_init.csv"))
        barrier(dist)
        return rows

    return evaluate_fn


def _dead_stop(cfg: GRPOConfig):
    """``run_loop``'s stop_fn: a policy whose every group is tied at reward 0 gets no gradient, so
    after ``cfg.stop_when_dead`` such steps in a row stop instead of idling."""
    dead = [0]

    def stop_fn(m: dict) -> str | None:
        dead[0] = dead[0] + 1 if m["zero_std_frac"] == 1.0 and m["reward_mean"] == 0.0 else 0
        if cfg.stop_when_dead and dead[0] >= cfg.stop_when_dead:
            return (f"collapsed: every group tied at reward 0 for {dead[0]} steps in a row; "
                    f"stopped at step {m['step']} of {cfg.steps}")
        return None

    return stop_fn


# --- command line ---------------------------------------------------------------------------


def main(argv=None) -> int:
    p = trainer_parser("python -m hlsm.grpo", __doc__, GRPOConfig, GRPO_PRESETS,
                       choices={"loss_agg": LOSS_AGGREGATIONS, "objective": OBJECTIVES}, skip=("preset",))
    p.add_argument("--preset", default="smoke", choices=sorted(GRPO_PRESETS),
                   help="training defaults (default 'smoke': from the smoke SFT base in seconds)")
    args = p.parse_args(argv)
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
