"""HLSM tasks as a reasoning-gym dataset (``pip install 'hlsm[rg]'``).

    import reasoning_gym
    import hlsm.integrations.reasoning_gym                       # registers the dataset "hlsm"
    data = reasoning_gym.create_dataset("hlsm", depth=3, seed=0, size=500)
    entry = data[0]                                              # {"question", "answer", "metadata"}
    data.score_answer(entry["answer"], entry)                    # 1.0; anything else 0.0
    # inside a composite: DatasetSpec("hlsm", weight=1, config={"split": "split.json", "support": "unseen"})

``HLSMDataset`` subclasses reasoning-gym's ``ProceduralDataset`` when reasoning-gym is installed
(and works without it, with the same interface). Item ``idx`` is a pure function of (seed, idx):
the same seed gives the same items, as everywhere in hlsm. The question states the program and,
with ``define_modules=True`` (the default here, since reasoning-gym tasks are usually solved
without task-specific training), what each module token in it does; the answer is the final value.
``score_answer`` is the exact verifier: 1.0 iff the answer (or the part of a full HLSM completion
after its last '#'), stripped of surrounding whitespace, equals the item's answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from random import Random

from hlsm.integrations import generator, module_glossary

try:
    from reasoning_gym.dataset import ProceduralDataset
    from reasoning_gym.factory import DATASETS, register_dataset
except ImportError:  # the same interface without reasoning-gym
    DATASETS, register_dataset = None, None

    class ProceduralDataset:
        """Stand-in for ``reasoning_gym.dataset.ProceduralDataset`` (config, seed, size; iteration)."""

        def __init__(self, config, seed=None, size: int = 500):
            config.validate()
            self.config, self.size = config, size
            self.seed = seed if seed is not None else Random().randint(0, 2**32)

        def __len__(self) -> int:
            return self.size

        def __iter__(self):
            return (self[i] for i in range(self.size))


DATASET_NAME = "hlsm"
QUESTION = (
    "Run this string manipulation program. Before '|' is the input string; after it come the steps, "
    "one per token pair: a routing token (R0-R9) picks which earlier values the step reads and a skill "
    "token (S00-S23) transforms them. Execute the steps in order; the answer is the value of the last "
    "step.\n\nProgram: {prompt}"
)


@dataclass
class HLSMDatasetConfig:
    """What an HLSM reasoning-gym dataset draws: a depth, or a support of a saved or built split."""

    depth: int = 3  # composition depth when no split is given (full module inventory)
    split: str | dict | None = None  # a Split.save JSON path or {"factory": ..., **kwargs}
    support: str | None = None  # the split's support to draw from, e.g. "unseen"
    define_modules: bool = True  # say in the question what each module token does
    seed: int | None = None
    size: int = 500

    def validate(self) -> None:
        """Raise a ValueError naming a bad value (unknown support, depth < 1, ...)."""
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an integer >= 1, got {self.size!r}")
        if (self.split is None) != (self.support is None):
            raise ValueError(f"give split and support together, got split={self.split!r}, support={self.support!r}")
        self.generator(0)

    def generator(self, seed: int):
        return generator(self.split, self.support, seed=seed, depth=self.depth)


class HLSMDataset(ProceduralDataset):
    """Seeded HLSM items as reasoning-gym entries {"question", "answer", "metadata"}."""

    def __init__(self, config: HLSMDatasetConfig):
        super().__init__(config=config, seed=config.seed, size=config.size)
        self.gen = config.generator(self.seed)

    @property
    def category(self) -> str:
        return DATASET_NAME

    def __getitem__(self, idx: int) -> dict:
        ex = self.gen[idx]
        question = QUESTION.format(prompt=ex.prompt)
        if self.config.define_modules:
            question += f"\n\nThe modules used here:\n{module_glossary(ex.prompt)}"
        question += "\n\nGive the final string only."
        row = json.loads(json.dumps(ex.to_dict()))  # tuples -> lists: JSON-ready metadata
        return {
            "question": question,
            "answer": ex.answer,
            "metadata": {
                "source_dataset": DATASET_NAME,
                "source_index": idx,
                "prompt": ex.prompt,
                "completion": ex.completion,
                "trace": ex.trace,
                "x": ex.x,
                "depth": ex.depth,
                "composition": [list(step) for step in ex.composition],
                "selections": row["selections"],
                "difficulty": {"depth": ex.depth},
            },
        }

    def score_answer(self, answer, entry: dict) -> float:
        """1.0 iff ``answer`` is exactly the item's answer (a full HLSM completion is cut after '#')."""
        if not isinstance(answer, str):
            return 0.0
        text = answer.strip()
        return 1.0 if text[text.rfind("#") + 1 :] == entry["answer"] else 0.0


def register() -> None:
    """Register ``HLSMDataset`` with reasoning-gym as "hlsm" (done on import; idempotent)."""
    if register_dataset is None:
        raise ImportError("registering needs the optional package 'reasoning_gym': pip install 'hlsm[rg]'")
    if DATASETS.get(DATASET_NAME, (None,))[0] is not HLSMDataset:
        register_dataset(DATASET_NAME, HLSMDataset, HLSMDatasetConfig)


if register_dataset is not None:
    register()
