"""The prompts a dynamic-sampling GRPO run kept, step by step: what its controls train on.

    cfg, items = followed_run(run, "SFTConfig.items_from", steps=100, seed=0)   # items[k]: step k's kept prompts
    support = followed_support(cfg)                                            # the Support they index

A GRPO run with ``dynamic_sampling`` logs, every step, ``kept_items``: the indices in its RL-support
stream (``hlsm.names.train_stream(rl_support)``) of the prompts whose groups it trained on, in
training order. Its labelled control (``SFTConfig.items_from``) and its RFT control
(``GRPOConfig.prompts_from``) read them here, the one place that checks the run they follow: a
finished dynamic-sampling run of the same seed with one record per step for exactly ``steps`` steps
(a ValueError naming the field otherwise). Nothing here knows about models.
"""

from __future__ import annotations

from pathlib import Path

from hlsm.checkpoint import CONFIG, POLICY, read_config, read_metrics

KEPT_ITEMS = "kept_items"  # the metrics.jsonl key of a dynamic-sampling step's kept prompts


def followed_run(run: str, field: str, steps: int, seed: int) -> tuple[dict, list[list[int]]]:
    """(config, kept items of steps 0 .. steps - 1) of the finished dynamic-sampling GRPO run ``run``.

    ``field`` ("SFTConfig.items_from", ...) names the setting in every error. The item indices mean
    something only in a stream of the same seed and support, and a control must follow every step
    of the run and no more: a run that stopped early (``stop_when_dead``) or ran a different number
    of steps is refused.
    """
    if not run or not (Path(run) / CONFIG).exists():
        raise ValueError(f"{field}: {run!r} is not a run directory (no {CONFIG})")
    if not (Path(run) / POLICY).exists():
        raise ValueError(f"{field}: {run!r} is not a finished run (no {POLICY}); finish it with --resume first")
    cfg = read_config(run)
    if not cfg.get("dynamic_sampling"):
        raise ValueError(f"{field}: {run!r} is not a dynamic-sampling GRPO run (only those log {KEPT_ITEMS})")
    if cfg.get("seed") != seed:
        raise ValueError(f"{field}: {run!r} has seed {cfg.get('seed')}, this run {seed}: its item indices would "
                         f"name other items")
    logged = {m["step"]: m[KEPT_ITEMS] for m in read_metrics(run) if KEPT_ITEMS in m}
    if sorted(logged) != list(range(1, steps + 1)):
        raise ValueError(f"{field}: {run!r} logged {KEPT_ITEMS} for steps 1..{max(logged, default=0)} "
                         f"({len(logged)} records) but this run has steps={steps}: they must match step for step")
    return cfg, [logged[k] for k in range(1, steps + 1)]


def followed_support(cfg: dict):
    """The ``hlsm.support.Support`` a GRPO run (its config dict) drew its RL prompts from: the support of
    its ``rl_support`` in its split (``split``, else its init run's)."""
    from hlsm.support import make_split

    spec = cfg["split"] if cfg.get("split") is not None else read_config(cfg["init"])["split"]
    return make_split(spec, "split").train[cfg["rl_support"]]
