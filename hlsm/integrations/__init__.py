"""HLSM tasks, splits and rewards for the tools people already train with.

    from hlsm.integrations.hf import to_dataset                  # a datasets.Dataset    (pip install 'hlsm[hf]')
    from hlsm.integrations.trl import reward_funcs               # GRPOTrainer rewards   (pip install 'hlsm[trl]')
    from hlsm.integrations.reasoning_gym import HLSMDataset      # a reasoning-gym task  (pip install 'hlsm[rg]')

``import hlsm`` never needs these packages: each integration module imports its own and raises an
ImportError naming the extra to install. This package holds what they share and needs none of
them: resolving a data source (a Split and support name, a Support, an HLSM, a split JSON file or
factory spec) to a seeded generator, the plain-language instruction that explains the task format,
and an item as a flat row with plain-text or chat prompts.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from hlsm.model import HLSM
from hlsm.modules import ROUTING_BY_TOKEN, SKILL_BY_TOKEN
from hlsm.names import DEFAULT_STREAM
from hlsm.support import Split, Support, make_split
from hlsm.text import FORMATS, render

EXTRAS = {"datasets": "hf", "trl": "trl", "transformers": "trl", "tokenizers": "trl", "reasoning_gym": "rg"}


def require(module: str, feature: str):
    """Import an optional package, or raise an ImportError saying which hlsm extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module, "integrations")
        raise ImportError(
            f"{feature} needs the optional package {module!r}; install it with: pip install 'hlsm[{extra}]'"
        ) from e


def load_split(spec) -> Split:
    """A Split from a Split, a path to a ``Split.save`` JSON file, a ``Split.to_dict()`` dict, or a
    factory spec ``{"factory": "compositional" | "heldout", **kwargs}`` (as ``hlsm.support.make_split``)."""
    if isinstance(spec, Split):
        return spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"split file {str(spec)!r} does not exist")
        try:
            return Split.load(path)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"split file {str(spec)!r} is not a saved Split: {e!r}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"a split is a Split, a JSON path or a dict, got {type(spec).__name__}")
    return make_split(spec)


def generator(source=None, support_name=None, seed: int = 0, format: str = "values", granularity: int = 1,
              stream: str | None = None, depth=3) -> HLSM:
    """The seeded HLSM stream behind every integration.

    ``source``: a Split (or anything ``load_split`` takes) with ``support_name``, a Support, an HLSM
    (used as is), or None for ``HLSM(depth=depth)`` over the full inventory. The stream name defaults
    to ``split.stream(support_name)`` for splits (the stream the trainers draw a training support
    from, the one evaluation draws an evaluation support from) and to "train" otherwise, as in
    ``hlsm.export_jsonl``, so the same seed gives the same rows everywhere, trainers included.
    """
    if isinstance(source, HLSM):
        return source
    if source is None or isinstance(source, Support):
        if support_name is not None:
            raise ValueError(f"support_name={support_name!r} needs a Split, got {type(source).__name__}")
        kw = {"support": source} if source is not None else {"depth": depth}
        return HLSM(seed=seed, fmt=format, granularity=granularity, stream=stream or DEFAULT_STREAM, **kw)
    split = load_split(source)
    if support_name is None:
        have = sorted(split.train) + sorted(split.eval)
        raise ValueError(f"a Split needs support_name, one of {have}")
    return HLSM(support=split.support(support_name), seed=seed, fmt=format, granularity=granularity,
                stream=stream or split.stream(support_name))


def format_example(format: str = "values", granularity: int = 1) -> tuple[str, str]:
    """A worked (prompt, completion) pair in ``format``: chain reverse, then skip shift_up."""
    prompt, completion, _, _ = render("abcd", [("chain", "reverse", "dcba"), ("skip", "shift_up", "bcde")],
                                      format, granularity)
    return prompt, completion


def instruction(format: str = "values", granularity: int = 1) -> str:
    """A short plain-language statement of the task and of the completion format."""
    if format not in FORMATS:
        raise ValueError(f"unknown trace format {format!r}; allowed: {', '.join(FORMATS)}")
    prompt, completion = format_example(format, granularity)
    write = {
        "values": "each step's value followed by ';' (one per step), then '#' and the final value",
        "explicit": "each step as its tokens, '=', its value and ';', then '#' and the final value",
        "answer": "'#' and the final value only",
    }[format]
    if granularity > 1 and format != "answer":
        write += f" (show one value per {granularity} steps: the last of each group)"
    return (
        "Each task is a string manipulation program: an input string, '|', then one step per token "
        "pair (a routing token R0-R9 that picks which earlier values the step reads, and a skill token "
        "S00-S23 that transforms them), then '>'. Execute the steps in order. Write " + write + ", "
        f"with no spaces and nothing else. Example: {prompt} -> {completion}"
    )


def module_glossary(prompt: str) -> str:
    """One line per module token used in ``prompt``: what it does (for solvers without training)."""
    steps = prompt.rsplit("|", 1)[-1].rstrip(">").split()  # "R0S03" -> routing "R0", skill "S03"
    tokens = dict.fromkeys(tok for step in steps for tok in (step[:2], step[2:]))
    mods = {tok: ROUTING_BY_TOKEN.get(tok) or SKILL_BY_TOKEN.get(tok) for tok in tokens}
    lines = [f"{tok} ({m.name}): {m.doc}" for tok, m in mods.items() if m is not None]
    return "\n".join(["h_0 is the input and h_t the value of step t.", *lines])


def chat_prompt(prompt: str, format: str = "values", granularity: int = 1, define_modules: bool = False):
    """An HLSM prompt as chat messages: the task format as the system message, the prompt as the user's."""
    user = prompt if not define_modules else f"{prompt}\n\nThe modules used here:\n{module_glossary(prompt)}"
    return [{"role": "system", "content": instruction(format, granularity)}, {"role": "user", "content": user}]


def example_row(ex, chat: bool = False, define_modules: bool = False) -> dict:
    """One dataset row of an ``hlsm.Example``."""
    row = ex.to_dict()
    row["selections"] = json.dumps(row["selections"])
    row["depth"] = ex.depth
    row["composition"] = json.dumps([list(step) for step in ex.composition])
    if chat:
        row["prompt"] = chat_prompt(ex.prompt, ex.format, ex.granularity, define_modules)
        row["completion"] = [{"role": "assistant", "content": ex.completion}]
    return row
