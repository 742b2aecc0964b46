"""HLSM rewards for TRL's ``GRPOTrainer`` (``pip install 'hlsm[trl]'``).

    from trl import GRPOConfig, GRPOTrainer
    from hlsm.integrations.hf import to_dataset
    from hlsm.integrations.trl import reward_funcs
    data = to_dataset(hlsm.compositional_split(), "rl", n=10_000)         # or chat=True for chat models
    trainer = GRPOTrainer(model="...", reward_funcs=reward_funcs(), args=GRPOConfig(...), train_dataset=data)

``reward_funcs`` returns one callable per ``hlsm.REWARDS`` entry, named ``hlsm_answer`` (exact
answer, 0/1), ``hlsm_format`` (well formed, right chunk count, 0/1) and ``hlsm_structure`` (fraction
of right trace chunks); TRL logs each as ``rewards/<name>/mean`` and ``/std``. Each has TRL's
signature ``f(prompts, completions, **columns)``: it rebuilds the item from the dataset columns
``selections``, ``answer``, ``format``, ``granularity`` (as ``to_dataset`` writes them) and scores
the completion with the exact hlsm verifier. Completions may be strings or conversational (a list
of message dicts: the last assistant message is scored); surrounding whitespace is stripped, and
anything malformed scores 0 without raising.

The reward functions need none of the optional packages; ``char_tokenizer`` and ``tiny_causal_lm``
(a randomly initialised Qwen2/Llama-style model built from a config, for tests and smoke runs:
nothing is downloaded) need ``transformers``.
"""

from __future__ import annotations

import json
import math

from hlsm.integrations import require
from hlsm.model import Example, Step
from hlsm.text import REWARDS

COLUMNS = ("selections", "answer", "format", "granularity")  # what rebuilding an item needs


def completion_text(completion) -> str | None:
    """The text of a completion: a string, or the last assistant message of a conversation."""
    if isinstance(completion, str):
        return completion.strip()
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return None
    for msg in reversed(completion):
        if isinstance(msg, dict) and msg.get("role", "assistant") == "assistant":
            content = msg.get("content")
            if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}, ...]
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict)) or None
            return content.strip() if isinstance(content, str) else None
    return None


def example_from_columns(columns: dict, i: int) -> Example:
    """Row ``i`` of TRL's column lists rebuilt as an ``hlsm.Example`` (enough for every reward)."""
    steps = tuple(
        Step(s["t"], s["routing"], s["skill"], tuple(s["operands"]), s["value"],
             tuple(s["span"]) if s["span"] is not None else None, tuple(s["prompt_span"]))
        for s in json.loads(columns["selections"][i])
    )
    fmt, answer = columns["format"][i], columns["answer"][i]
    trace = columns["trace"][i] if "trace" in columns else ""
    x = columns["x"][i] if "x" in columns else ""
    return Example(0, x, steps, "", trace + "#" + answer, answer, fmt, int(columns["granularity"][i]))


def score_completions(reward: str, completions, columns: dict) -> list[float]:
    """``hlsm.REWARDS[reward]`` of each completion against its row of ``columns``."""
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"hlsm reward functions need the dataset columns {list(COLUMNS)}, missing {missing}: build the "
            "dataset with hlsm.integrations.hf.to_dataset"
        )
    fn, out = REWARDS[reward], []
    for i, completion in enumerate(completions):
        text = completion_text(completion)
        out.append(0.0 if text is None else float(fn(example_from_columns(columns, i), text)))
    return out


def hlsm_answer(prompts=None, completions=(), **columns) -> list[float]:
    """1.0 iff the completion's answer (after the last '#') is exactly right."""
    return score_completions("answer", completions, columns)


def hlsm_format(prompts=None, completions=(), **columns) -> list[float]:
    """1.0 iff the completion is well formed in the item's format with the right number of chunks."""
    return score_completions("format", completions, columns)


def hlsm_structure(prompts=None, completions=(), **columns) -> list[float]:
    """The fraction of trace chunks that are right (padding never pays)."""
    return score_completions("structure", completions, columns)


FUNCS = {"answer": hlsm_answer, "format": hlsm_format, "structure": hlsm_structure}


class Weighted:
    """A reward function scaled by a weight, logged under the same name (picklable)."""

    def __init__(self, fn, weight: float):
        self.fn, self.weight, self.__name__ = fn, float(weight), fn.__name__

    def __call__(self, prompts=None, completions=(), **columns) -> list[float]:
        return [self.weight * r for r in self.fn(prompts, completions, **columns)]


def reward_funcs(weights: dict | None = None) -> list:
    """TRL reward functions, one per name in ``weights`` (default: answer, format, structure, weight 1).

    Names are ``hlsm.REWARDS`` keys (or the ``hlsm_`` function names). A weight other than 1 scales
    that function's output, which is also what TRL then logs; TRL's own ``GRPOConfig.reward_weights``
    is the alternative that keeps the logged values raw.
    """
    weights = {name: 1.0 for name in FUNCS} if weights is None else dict(weights)
    if not weights:
        raise ValueError("weights must name at least one reward")
    out = []
    for name, w in weights.items():
        key = name.removeprefix("hlsm_") if isinstance(name, str) else name
        if key not in FUNCS:
            raise ValueError(f"unknown reward {name!r}; allowed: {', '.join(FUNCS)}")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"weight of reward {name!r} must be a finite number, got {w!r}")
        out.append(FUNCS[key] if w == 1 else Weighted(FUNCS[key], w))
    return out


# --- a tiny model for tests and smoke runs (nothing downloaded) ------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` over printable ASCII and newline, built locally.

    Specials ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; left padding (for generation); a plain
    ``role: content`` chat template, so chat prompts work too.
    """
    tokenizers = require("tokenizers", "hlsm.integrations.trl.char_tokenizer")
    transformers = require("transformers", "hlsm.integrations.trl.char_tokenizer")
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *chars])}
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
    raw.decoder = tokenizers.decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_causal_lm(tokenizer, arch: str = "qwen2", hidden: int = 32, layers: int = 2, heads: int = 2,
                   max_positions: int = 1024, seed: int = 0):
    """A randomly initialised Qwen2- or Llama-style causal LM sized for ``tokenizer`` (from a config)."""
    import torch

    transformers = require("transformers", "hlsm.integrations.trl.tiny_causal_lm")
    classes = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "llama": ("LlamaConfig", "LlamaForCausalLM")}
    if arch not in classes:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(classes)}")
    config_cls, model_cls = (getattr(transformers, name) for name in classes[arch])
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return model_cls(config)
