"""GRPO's configuration: every knob of a run in one dataclass, each checked before anything runs.

    cfg = GRPOConfig.from_preset("cpu", init="runs/sft", steps=100)   # hlsm.presets.GRPO_PRESETS
    cfg.validate()                  # the fields alone (ValueError naming the field)
    cfg.check_split(split)          # the supports it names exist in the split and hold items

The comment beside each field is its ``--help`` line (``hlsm.cli``). ``training_stream`` is the one
place GRPO turns a support name into an item stream, so the check and the trainer agree on it.

Dynamic sampling (DAPO; the filter Yuan et al. use) is a GRPO option: a group whose G rewards tie has
zero advantage and no gradient, so each step drops such groups and draws P more prompts, up to
``max_draws`` draws, and trains on the first P groups kept (fewer if the draws run out). RFT is
refused with it (RFT learns from all-correct groups, which are tied); its RFT control follows the
prompts it kept instead (``prompts_from``, ``hlsm.control.rft_control(grpo, run=...)``). A step then
trains on any number of groups, so ``minibatches`` must divide ``group_size``, and every step's
``kept_items`` is logged (``log_every`` = 1) for the controls to read (``hlsm.kept_items``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from hlsm.grpo_loss import LOSS_AGGREGATIONS, OBJECTIVES, RFT
from hlsm.kept_items import followed_run, followed_support
from hlsm.model import HLSM
from hlsm.names import RL, RL_PROMPTS, SEEN, SFT, UNSEEN, train_stream
from hlsm.presets import GRPO_PRESETS


@dataclass
class GRPOConfig:
    """Every knob of a GRPO run; ``validate`` checks them all up front (ValueError naming the field)."""

    init: str = ""  # SFT run directory to start from (policy weights, model config, split, format)
    split: dict | None = None  # a hlsm.support.make_split spec; None: the init run's split
    seed: int = 0  # seeds the RL prompt stream, the sampling generators and the replay stream
    steps: int = 200  # RL steps; step k draws RL prompts [k*P, (k+1)*P) and samples G each (unless dynamic_sampling)
    prompts_per_step: int = 16  # P: prompts per step, all ranks together (divisible by world size)
    group_size: int = 8  # G: completions sampled per prompt (>= 2: advantages are group-relative)
    dynamic_sampling: bool = False  # DAPO: drop groups whose G rewards tie, draw P more prompts until P groups are kept
    max_draws: int = 4  # with dynamic_sampling: at most this many draws of P prompts a step (trains on <= P kept)
    prompts_from: str = ""  # a finished dynamic-sampling GRPO run: step k's prompts are its kept_items of step k
    rollout_batch_size: int | None = None  # completions per step; optional cross-check, must be P * G
    micro_batch_size: int = 64  # completions per forward/backward (gradient accumulation inside an update)
    epochs: int = 1  # passes over each rollout batch
    minibatches: int = 1  # optimizer updates per pass; row n of the rollout batch goes to minibatch n % this
    lr: float = 1e-4  # AdamW learning rate (constant after warmup)
    warmup_steps: int = 0  # linear learning-rate warmup, in optimizer updates
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max global grad norm per update (0: no clipping; the norm is logged anyway)
    temperature: float = 1.0  # sampling temperature; old/ref log-probs and ratios are taken at it too
    top_k: int = 0  # sample from the top k tokens only (0: the full distribution)
    max_new_tokens: int = 0  # completion length cap (0: the policy's context minus the longest prompt)
    objective: str = "grpo"  # grpo: group-relative advantages | rft: SFT on the correct samples only (the RFT control)
    scale_std: bool = True  # divide group-centred rewards by the group std (off: Dr. GRPO)
    loss_agg: str = "seq_mean"  # seq_mean | token_mean | constant (Dr. GRPO: sum / max_new_tokens)
    eps_low: float = 0.2  # clip ratios below 1 - eps_low (negative advantages)
    eps_high: float = 0.2  # clip ratios above 1 + eps_high (positive advantages; DAPO: 0.28)
    beta: float = 0.0  # weight of the k3 KL to the frozen initial policy; 0 loads no reference at all
    rewards: dict = field(default_factory=lambda: {"answer": 1.0})  # name in hlsm.text.REWARDS -> weight
    rl_support: str = RL  # the split's training support the RL prompts come from
    replay_fraction: float = 0.0  # labelled SFT sequences per step, as a fraction of P (NLL term)
    replay_support: str = SFT  # the split's training support replay sequences come from
    replay_coef: float = 1.0  # weight of the replay NLL term in the loss
    eval_supports: tuple = (SEEN, RL_PROMPTS, UNSEEN)  # the split's evaluation supports to score
    eval_every: int = 50  # evaluate every this many steps (and at the end); 0: only at the end
    eval_n: int = 256  # items per eval support (greedy decoding, exact-answer accuracy)
    ckpt_every: int = 50  # checkpoint every this many steps (and at the end)
    log_every: int = 1  # write metrics.jsonl every this many steps
    stop_when_dead: int = 5  # stop after this many steps in a row whose groups all tied at reward 0 (0: never)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GRPOConfig:
        if name not in GRPO_PRESETS:
            raise ValueError(f"GRPOConfig preset: unknown {name!r}; allowed: {', '.join(GRPO_PRESETS)}")
        return cls(**{**GRPO_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def check_split(self, split) -> None:
        """The named supports exist in ``split`` and hold examples (ValueError naming the field).

        RL prompts and replay data must come from training supports: GRPO never trains on an
        evaluation support (whose items the figures score as held out).
        """
        train = [("rl_support", self.rl_support)]
        if self.replay_fraction > 0:
            train.append(("replay_support", self.replay_support))
        for field_name, name in train:
            training_stream(split, name, field_name, self.seed, "values", 1)
        if self.prompts_from and followed_support(self.followed()[0]) != split.train[self.rl_support]:
            raise ValueError(f"GRPOConfig.prompts_from={self.prompts_from!r}: the run it follows drew rl_support "
                             f"{self.rl_support!r} from another support than this split's: its kept_items name "
                             f"other items")
        if self.replay_fraction > 0 and self.replay_support == self.rl_support:
            raise ValueError(f"GRPOConfig.replay_support={self.replay_support!r} is the rl_support: replay would "
                             f"re-show earlier RL prompts; choose another training support")
        for name in self.eval_supports:
            if name not in split.eval:
                raise ValueError(f"GRPOConfig.eval_supports: {name!r} is not an evaluation support of split "
                                 f"{split.name!r} (have {sorted(split.eval)})")
            try:
                HLSM(support=split.eval[name], seed=self.seed)
            except ValueError as e:
                raise ValueError(f"GRPOConfig.eval_supports={name!r}: {e}") from None

    def validate(self) -> GRPOConfig:
        from hlsm.text import REWARDS

        def bad(name, why):
            raise ValueError(f"GRPOConfig.{name}: {why}, got {getattr(self, name)!r}")

        for name in ("steps", "prompts_per_step", "micro_batch_size", "epochs", "minibatches", "eval_n"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be an integer >= 1")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            bad("group_size", "must be an integer >= 2 (advantages are relative to the group)")
        n = self.prompts_per_step * self.group_size
        if self.rollout_batch_size is not None and self.rollout_batch_size != n:
            bad("rollout_batch_size", f"must equal prompts_per_step * group_size = {n}")
        if n % self.minibatches:
            bad("minibatches", f"must divide the rollout batch of P * G = {n} completions")
        for name in ("warmup_steps", "eval_every", "ckpt_every", "max_new_tokens", "top_k", "stop_when_dead"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if self.log_every < 1:
            bad("log_every", "must be >= 1")
        for name in ("lr", "weight_decay", "grad_clip", "beta", "eps_low", "eps_high", "replay_coef"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if self.lr == 0:
            bad("lr", "must be > 0")
        if self.eps_low >= 1:
            bad("eps_low", "must be < 1 (the lower clip bound is 1 - eps_low)")
        if not self.temperature > 0:
            bad("temperature", "must be > 0")
        if not 0 <= self.replay_fraction <= 16:
            bad("replay_fraction", "must be in [0, 16]")
        if self.objective not in OBJECTIVES:
            bad("objective", f"must be one of {', '.join(OBJECTIVES)}")
        if self.loss_agg not in LOSS_AGGREGATIONS:
            bad("loss_agg", f"must be one of {', '.join(LOSS_AGGREGATIONS)}")
        if not isinstance(self.rewards, dict) or not self.rewards:
            bad("rewards", "must be a non-empty dict {reward name: weight}")
        for name, w in self.rewards.items():
            if name not in REWARDS:
                bad("rewards", f"unknown reward {name!r} (allowed: {', '.join(sorted(REWARDS))})")
            if not isinstance(w, (int, float)) or not math.isfinite(w):
                bad("rewards", f"weight of {name!r} must be a finite number")
        # RFT is the mean NLL of the kept completions only with one plain update per rollout: more updates
        # bring ratios and clipping, a KL or replay term adds loss on other rows
        if self.objective == RFT and (self.loss_agg != "seq_mean" or "answer" not in self.rewards
                                      or self.epochs * self.minibatches != 1 or self.beta or self.replay_fraction):
            bad("objective", "rft (SFT on the correct samples: the mean NLL of the completions whose answer "
                             "reward is 1) needs loss_agg 'seq_mean', an 'answer' reward, epochs = minibatches = 1, "
                             "beta = 0 and replay_fraction = 0")
        self._check_sampling(bad)
        return self

    def followed(self) -> tuple[dict, list[list[int]]]:
        """(config, kept items of each step) of the ``prompts_from`` run (``hlsm.kept_items.followed_run``)."""
        return followed_run(self.prompts_from, "GRPOConfig.prompts_from", self.steps, self.seed)

    def _check_sampling(self, bad) -> None:
        """dynamic_sampling, max_draws and prompts_from: each one, and how they fit the other fields."""
        if not isinstance(self.dynamic_sampling, bool):
            bad("dynamic_sampling", "must be true or false")
        if not isinstance(self.max_draws, int) or isinstance(self.max_draws, bool) or self.max_draws < 1:
            bad("max_draws", "must be an integer >= 1")
        if not isinstance(self.prompts_from, str):
            bad("prompts_from", "must be a run directory or ''")
        if (self.dynamic_sampling or self.prompts_from) and self.group_size % self.minibatches:
            bad("minibatches", "must divide group_size with dynamic_sampling or prompts_from: a step trains on any "
                               "number of groups, and each minibatch takes the same share of every group")
        if self.dynamic_sampling:
            if self.objective == RFT:
                bad("dynamic_sampling", "is a GRPO option: RFT learns from the correct samples of tied (all-correct) "
                                        "groups too; the RFT control of a dynamic-sampling run follows its kept "
                                        "prompts instead (prompts_from; hlsm.control.rft_control(grpo, run=...))")
            if self.prompts_from:
                bad("prompts_from", "must be '' with dynamic_sampling: a run either picks its prompts or follows "
                                    "another run's")
            if self.log_every != 1:
                bad("log_every", "must be 1 with dynamic_sampling: its controls read every step's kept_items")
        if self.prompts_from:
            run = self.followed()[0]
            for name in ("rl_support", "prompts_per_step"):
                if run.get(name) != getattr(self, name):
                    bad("prompts_from", f"the run it follows has {name}={run.get(name)!r}, this one "
                                        f"{getattr(self, name)!r}")


def training_stream(split, name: str, field_name: str, seed: int, fmt: str, granularity: int) -> HLSM:
    """The stream GRPO draws training support ``name`` from (``hlsm.names.train_stream``, the one SFT
    uses too). An evaluation support, or one without examples, is a ValueError naming the field."""
    if name not in split.train:
        raise ValueError(
            f"GRPOConfig.{field_name}={name!r} is not a training support of split {split.name!r} "
            f"(training supports: {', '.join(sorted(split.train))}); GRPO never trains on evaluation supports"
        )
    try:
        return HLSM(support=split.train[name], seed=seed, fmt=fmt, granularity=granularity,
                    stream=train_stream(name))
    except ValueError as e:
        raise ValueError(f"GRPOConfig.{field_name}={name!r}: {e}") from None
