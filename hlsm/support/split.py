"""``Split``: one experiment's named training and evaluation supports, and its leakage proof."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hlsm.names import eval_stream, train_stream
from hlsm.support.proofs import LeakageError, compositions_disjoint, items_disjoint
from hlsm.support.set import Support


def name_tuple(value, field: str, what: str = "module names") -> tuple[str, ...]:
    """``value`` as a tuple of names; a bare string (which would be split into its characters) is a
    ValueError naming ``field``."""
    if isinstance(value, str):
        raise ValueError(f"{field} must be a tuple of {what}, got the string {value!r}; write ({value!r},)")
    return tuple(value)


@dataclass(frozen=True)
class Split:
    """One experiment's data design: named training and evaluation supports.

    ``unseen`` lists the evaluation supports whose compositions must be absent from every
    training support; every other evaluation support only needs item-level disjointness.
    """

    name: str
    train: dict[str, Support]
    eval: dict[str, Support]
    unseen: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):
        if not self.train or not self.eval:
            raise ValueError(f"split {self.name!r} needs at least one train and one eval support")
        both = sorted(set(self.train) & set(self.eval))
        if both:  # one name, two supports: an evaluator asking for it could be handed training data
            raise ValueError(
                f"split {self.name!r}: {both} name both a training and an evaluation support; "
                f"every support name must be unique (e.g. eval {both[0]!r} -> 'eval_{both[0]}')"
            )
        for n in self.unseen:
            if n not in self.eval:
                raise ValueError(f"unseen={n!r} is not an eval support; have {sorted(self.eval)}")
        object.__setattr__(self, "unseen", tuple(self.unseen))

    def restrict_eval(self, names, n: int, seed: int = 0) -> Split:
        """The same split with each evaluation support in ``names`` cut down to ``n`` listed
        compositions (``Support.restrict``): more items per composition for the same budget."""
        names = name_tuple(names, "restrict_eval: names", "support names")
        missing = [m for m in names if m not in self.eval]
        if missing:
            raise ValueError(f"restrict_eval: {missing[0]!r} is not an eval support; have {sorted(self.eval)}")
        evals = {k: v.restrict(n, seed) if k in names else v for k, v in self.eval.items()}
        return Split(f"{self.name}-r{n}s{seed}", dict(self.train), evals, self.unseen, self.description)

    def support(self, name: str) -> Support:
        """The support named ``name`` (names are unique across ``train`` and ``eval``)."""
        if name in self.train:
            return self.train[name]
        if name in self.eval:
            return self.eval[name]
        raise ValueError(
            f"split {self.name!r} has no support {name!r}; have {sorted(self.train) + sorted(self.eval)}"
        )

    def stream(self, name: str) -> str:
        """The stream support ``name`` is drawn from: a trainer's for a training support, else eval's."""
        self.support(name)
        return train_stream(name) if name in self.train else eval_stream(name)

    def check_disjoint(self) -> list[str]:
        """Prove no eval item can occur in training; raise LeakageError naming the pair otherwise.

        Returns the proof, one line per (train, eval) pair.
        """
        lines = []
        for e_name, e in self.eval.items():
            for t_name, t in self.train.items():
                if e_name in self.unseen:
                    ok, why = compositions_disjoint(t, e)
                    kind = "compositions"
                else:
                    ok, why = items_disjoint(t, e)
                    kind = "items"
                if not ok:
                    raise LeakageError(
                        f"split {self.name!r}: eval {e_name!r} and train {t_name!r} may share {kind}: {why}"
                    )
                lines.append(f"eval {e_name} vs train {t_name}: {kind} disjoint ({why})")
        return lines

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "unseen": list(self.unseen),
            "train": {k: v.to_dict() for k, v in self.train.items()},
            "eval": {k: v.to_dict() for k, v in self.eval.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            unseen=tuple(d.get("unseen", ())),
            train={k: Support.from_dict(v) for k, v in d["train"].items()},
            eval={k: Support.from_dict(v) for k, v in d["eval"].items()},
        )

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> Split:
        return cls.from_dict(json.loads(Path(path).read_text()))
