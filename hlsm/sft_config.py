"""SFT's configuration: every knob of a run in one dataclass, each checked before anything runs.

    cfg = SFTConfig.from_preset("cpu", steps=2000)   # hlsm.presets.SFT_PRESETS, then the overrides
    cfg.validate()                  # every field, the split's supports and its leakage (ValueError naming the field)
    cfg.model_config()              # the PolicyConfig it trains (the preset's shape, or the init run's)

The comment beside each field is its ``--help`` line (``hlsm.cli``). ``make_split`` reads the
``split`` field; ``mix_counts`` is how a batch is shared out among the training supports (the check
that every support gets an item and the trainer's batches use the same rounding).
All importable from ``hlsm.sft`` as before.

``items_from`` makes a run the labelled control of a dynamic-sampling GRPO run
(``hlsm.control.labelled_control(grpo, run=...)``): at step k the share of that run's rl_support is
not the next n_s items of its stream but the items the run kept at step k (``hlsm.kept_items``),
so a batch holds up to batch_size items; the other supports keep their shares.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from hlsm.checkpoint import load_checkpoint
from hlsm.kept_items import followed_run, followed_support
from hlsm.model import HLSM
from hlsm.names import ATOMS, EVAL_ATOMS, SEEN, SFT, UNSEEN
from hlsm.policy import PRESETS, PolicyConfig
from hlsm.presets import SFT_PRESETS  # training defaults per preset name (beside its model shape)
from hlsm.support import DEFAULT_SPLIT, Split
from hlsm.support import make_split as support_make_split
from hlsm.text import FORMATS, format_kw, trace_format


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
    # support name (training or evaluation) -> its own trace format; a support not named uses fmt /
    # granularity. E.g. atoms explicit, compounds values (modules latent)
    formats: dict = field(default_factory=dict)  # support -> trace format: explicit, values, answer, explicit/3 ...
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
    # items each training stream skips first: continued SFT reads past what its init saw (an init of S
    # updates of batch B read fewer than S * B items of any one stream, so S * B is always enough)
    data_offset: int = 0  # items each training stream skips first (continued SFT reads past what its init saw)
    items_from: str = ""  # a finished dynamic-sampling GRPO run: step k reads its kept_items of k from its rl_support
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
        for name in ("micro_batch_size", "warmup_steps", "eval_every", "ckpt_every", "seed", "data_offset"):
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
        if not isinstance(self.formats, dict):
            bad("formats", "must be a dict {support name: trace format}")
        for name, spec in self.formats.items():
            try:
                trace_format(spec)
            except ValueError as e:
                bad("formats", f"support {name!r}: {e}")
        self.model_config()
        split = make_split(self.split)
        for name in self.formats:
            if name not in split.train and name not in split.eval:
                bad("formats", f"{name!r} is not a support of the split (have {sorted([*split.train, *split.eval])})")
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
                HLSM(support=split.support(name), seed=self.seed, **self.format_kw(name))
            except ValueError as e:
                field_name = "train_supports" if name in self.train_supports else "eval_supports"
                raise ValueError(f"SFTConfig.{field_name}: support {name!r} has no examples: {e}") from None
        split.check_disjoint()  # LeakageError (a ValueError) if an eval item could occur in training
        if self.items_from:
            self.followed(split)
        return self

    def format_kw(self, support: str) -> dict:
        """{"fmt", "granularity"} of ``support``'s items: its ``formats`` entry, else the run's."""
        return format_kw(self.formats, support, self.fmt, self.granularity)

    def followed(self, split: Split | None = None) -> tuple[str, list]:
        """(the rl_support of the ``items_from`` run, its kept items of steps 0 .. steps - 1), checked: that
        support is one of ``train_supports`` with the run's P items a batch, drawn from the same support and
        seed (the indices name the same items), and no ``data_offset`` (the indices are the items)."""
        split = split or make_split(self.split)
        counts = mix_counts(self.train_supports, self.batch_size)
        run, items = followed_run(self.items_from, "SFTConfig.items_from", self.steps, self.seed)
        rl, p = run["rl_support"], run["prompts_per_step"]
        why = None
        if counts.get(rl) != p:
            why = f"its run's rl_support {rl!r} must take the run's P = {p} items a batch (train_supports: {counts})"
        elif followed_support(run) != split.train[rl]:
            why = f"its run's rl_support {rl!r} is another support than this split's: its kept_items name other items"
        elif self.data_offset:
            why = f"needs data_offset = 0 (the kept items are stream indices), got data_offset={self.data_offset}"
        if why:
            raise ValueError(f"SFTConfig.items_from: {why}; items_from={self.items_from!r}")
        return rl, items


def mix_counts(weights: dict[str, float], batch_size: int) -> dict[str, int]:
    """Items per batch for each support: proportional to its weight, largest remainder rounding."""
    total = sum(weights.values())
    raw = {k: batch_size * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    by_remainder = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), list(weights).index(k)))
    for k in by_remainder[: batch_size - sum(counts.values())]:
        counts[k] += 1
    return counts
