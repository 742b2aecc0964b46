"""HLSM items as a Hugging Face ``datasets.Dataset`` (``pip install 'hlsm[hf]'``).

    from hlsm.integrations.hf import load, save, to_dataset
    ds = to_dataset(hlsm.compositional_split(), "rl", n=10_000, seed=0)             # plain-text prompts
    chat = to_dataset(hlsm.compositional_split(), "rl", n=10_000, chat=True)        # system + user messages
    save(ds, "data/rl"); ds = load("data/rl")                                       # local disk only

Columns: ``prompt`` and ``completion`` (strings, or with ``chat=True`` message lists: a system
message explaining the format and a user message holding the HLSM prompt; one assistant message),
``answer``, ``trace``, ``selections`` (JSON: the ground-truth steps, as ``Example.to_dict``),
``depth``, ``composition`` (JSON: [[routing, skill], ...]), and ``x``, ``format``, ``granularity``,
``index``, which with ``selections`` and ``answer`` are what ``hlsm.integrations.trl.reward_funcs``
need to rebuild the item and score a completion exactly. The items are ``hlsm.export_jsonl``'s
(and ``python -m hlsm sample``'s) for the same source and seed.
"""

from __future__ import annotations

from hlsm.integrations import example_row, generator, require

datasets = require("datasets", "hlsm.integrations.hf")

CHUNK = 10_000  # items sampled per call


def to_dataset(split_or_support=None, support_name: str | None = None, n: int = 1000, seed: int = 0,
               format: str = "values", chat: bool = False, *, granularity: int = 1, stream: str | None = None,
               depth: int = 3, define_modules: bool = False):
    """``n`` seeded HLSM items as a ``datasets.Dataset``.

    ``split_or_support``: a Split (or a split JSON path / factory dict) with ``support_name``, a
    Support, an HLSM, or None for ``HLSM(depth=depth)``. ``format``: explicit | values | answer.
    ``chat=True`` gives conversational prompt/completion columns; ``define_modules=True`` adds what
    each module token in the prompt does to the user message (for models never trained on HLSM).
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    gen = generator(split_or_support, support_name, seed, format, granularity, stream, depth)
    rows = [
        example_row(ex, chat, define_modules)
        for start in range(0, n, CHUNK)
        for ex in gen.sample(min(CHUNK, n - start), start=start)
    ]
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in ("prompt", "completion", "answer", "trace")})
    return datasets.Dataset.from_list(rows)


def save(dataset, path) -> None:
    """Write a dataset to a local directory (``save_to_disk``; nothing goes to the Hub)."""
    dataset.save_to_disk(str(path))


def load(path):
    """Read a dataset written by ``save``."""
    return datasets.load_from_disk(str(path))
