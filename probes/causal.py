"""Causal check: patch one step's module-token representation and see whether the output follows it.

    res = patch_step(model, examples, t=1, layer=1, what="skill", seed=0)
    res.summary()     # {"n": ..., "follow": ..., "stay": ..., "interchange": ..., ...}
    by_layer = patch_step_layers(model, examples, t=1, layers=range(5))  # unpatched runs done once

For each example of depth >= t a counterfactual twin is built: the same input with step t's skill
(or routing) swapped for another one (``counterfactual``; its trace is recomputed with
``hlsm.model.execute``). The twin's prompt differs in one token and has the same length, so both
prompts sit in the same columns of a left-padded batch. The residual stream at layer ``layer``
(0 = embeddings, i = after block i) at step t's module tokens (``R.`` ``S..``) of the original
prompt is overwritten with the twin's during the prompt prefill; decoding then reads the patched
keys and values from the KV cache. The model's greedy chunk for step t is compared with the
twin's (``follow``: the output follows the patched module) and the original's (``stay``).
Patching a step with itself (``what="self"``) is an exact no-op: the donor states come from the
same code path on the same batch, so the output is bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hlsm.generation import generate
from hlsm.model import Example, Step, execute
from hlsm.modules import ROUTING_NAMES, SKILL_NAMES
from hlsm.policy import unwrap
from hlsm.text import Tokenizer, expected_chunks, parse_completion, render
from probes.activations import token_rows


def counterfactual(ex: Example, t: int, skill: str | None = None, routing: str | None = None) -> Example:
    """``ex`` with step t's skill and/or routing replaced; values, trace and answer recomputed."""
    if not 1 <= t <= ex.depth:
        raise ValueError(f"step t={t} is outside 1..{ex.depth}")
    comp = list(ex.composition)
    r, s = comp[t - 1]
    comp[t - 1] = (routing or r, skill or s)
    sel = execute(ex.x, comp)
    prompt, completion, spans, pspans = render(ex.x, [(r, s, v) for r, s, _, v in sel], ex.format,
                                               ex.granularity)
    steps = tuple(
        Step(i, r, s, ops, v, spans[i - 1], pspans[i - 1]) for i, (r, s, ops, v) in enumerate(sel, 1)
    )
    return Example(ex.index, ex.x, steps, prompt, completion, sel[-1][3], ex.format, ex.granularity)


def layer_module(model, layer: int) -> torch.nn.Module:
    """``Policy.layer_module(layer)``, the module whose output is ``hidden[layer]``: 0 embeddings, i
    block i. The final norm (layer n_layer + 1) is refused: it feeds no key or value of the cache, so
    patching it at prompt positions could not change what is decoded."""
    base = unwrap(model)
    if not 0 <= layer <= base.config.n_layer:
        raise ValueError(f"layer must be in 0..{base.config.n_layer} (0: embeddings, i: block i), "
                         f"got {layer}")
    return base.layer_module(layer)


@contextlib.contextmanager
def output_hook(module: torch.nn.Module, fn):
    """Run ``fn(output)`` after every forward of ``module``; a non-None return replaces the output."""
    handle = module.register_forward_hook(lambda m, args, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def _greedy(model, prompts, tok: Tokenizer, max_new_tokens: int | None = None):
    m = max_new_tokens or unwrap(model).config.block_size - max(len(p) for p in prompts)
    return generate(model, prompts, m, temperature=0.0, eos_id=tok.eos_id, pad_id=tok.pad_id, tokenizer=tok)


def prefill_states(model, prompts, layer: int, tok: Tokenizer | None = None) -> torch.Tensor:
    """hidden[layer] (B, P, d) of the left-padded prompts, computed by ``generate``'s own prefill."""
    tok = tok or Tokenizer()
    got = []

    def grab(out):
        if not got:  # the prefill: the first forward, over the whole prompt
            got.append(out.detach().clone())

    with output_hook(layer_module(model, layer), grab):
        _greedy(model, prompts, tok, max_new_tokens=1)
    return got[0]


def patched_generate(model, prompts, layer: int, columns, donor: torch.Tensor, tok: Tokenizer | None = None,
                     max_new_tokens: int | None = None):
    """Greedy ``generate`` with hidden[layer] at (row b, columns[b]) of the prefill replaced by ``donor``.

    columns[b] are positions in row b's own ``<bos> prompt`` (0 = <bos>); the left padding is added
    here. ``donor`` is a ``prefill_states`` tensor of prompts with the same lengths.
    """
    tok = tok or Tokenizer()
    P = max(len(p) for p in prompts)
    rows = torch.tensor([b for b, cols in enumerate(columns) for _ in cols], dtype=torch.long)
    cols = [P - len(prompts[b]) + c for b, cs in enumerate(columns) for c in cs]  # + left padding
    cols = torch.tensor(cols, dtype=torch.long)
    if donor.shape[:2] != (len(prompts), P):
        raise ValueError(f"donor states {tuple(donor.shape)} do not fit {len(prompts)} prompts of width {P}")

    rows, cols = rows.to(donor.device), cols.to(donor.device)

    def patch(out):
        if out.shape[1] != P:  # a decoding step (one new token): the prompt is already in the cache
            return None
        out = out.clone()
        out[rows, cols] = donor[rows, cols].to(out.dtype)
        return out

    with output_hook(layer_module(model, layer), patch):
        return _greedy(model, prompts, tok, max_new_tokens)


def _chunk_value(ex: Example, text: str, t: int) -> str | None:
    """The value the completion ``text`` shows for step t's chunk (its answer in the answer format)."""
    p = parse_completion(text, ex.format)
    if ex.format == "answer":
        return p.answer
    c = (t - 1) // ex.granularity
    return p.chunks[c][1] if c < len(p.chunks) else None


def _want_value(ex: Example, t: int) -> str:
    if ex.format == "answer":
        return ex.answer
    return expected_chunks(ex)[(t - 1) // ex.granularity][1]


@dataclass
class PatchResult:
    """Per patched example (all arrays aligned): what the model wrote for step t, patched or not."""

    examples: list  # the originals (depth >= t)
    twins: list  # their counterfactuals (the donors)
    texts: list[str]  # greedy completions of the originals, unpatched
    twin_texts: list[str]  # greedy completions of the twins, unpatched
    patched_texts: list[str]  # greedy completions of the originals with step t patched from the twin
    follow: np.ndarray  # bool: patched step-t chunk == the twin's
    stay: np.ndarray  # bool: patched step-t chunk == the original's
    differ: np.ndarray  # bool: the twin's step-t chunk differs from the original's (follow/stay tell apart)
    base_ok: np.ndarray  # bool: unpatched model right on the original's step t
    twin_ok: np.ndarray  # bool: unpatched model right on the twin's step t

    def summary(self) -> dict:
        """Rates over items whose two chunks differ; interchange = follow among items the model can do."""
        d, able = self.differ, self.differ & self.twin_ok & self.base_ok
        rate = lambda a, m: float(a[m].mean()) if m.any() else float("nan")
        return {"n": int(d.sum()), "follow": rate(self.follow, d), "stay": rate(self.stay, d),
                "base_acc": rate(self.base_ok, d), "twin_acc": rate(self.twin_ok, d),
                "n_able": int(able.sum()), "interchange": rate(self.follow, able)}


def _twins(exs: Sequence[Example], t: int, what: str, choices: Sequence[str] | None, seed: int) -> list[Example]:
    """Each example's counterfactual at step t: another module from ``choices`` (default: those used
    at step t, else all), drawn with ``seed``, and one whose values are all non-empty if any is."""
    rng = np.random.default_rng(seed)
    field = "routing" if what == "routing" else "skill"
    pool = sorted(set(choices or [getattr(ex.steps[t - 1], field) for ex in exs]))
    if what != "self" and len(pool) < 2:
        pool = list(ROUTING_NAMES if field == "routing" else SKILL_NAMES)
    twins = []
    for ex in exs:
        if what == "self":
            twins.append(ex)
            continue
        own = getattr(ex.steps[t - 1], field)
        other = [m for m in pool if m != own]
        twin = counterfactual(ex, t, **{field: other[rng.integers(len(other))]})
        if not all(s.value for s in twin.steps):  # an empty value would make "#" its right answer
            for m in other:
                cf = counterfactual(ex, t, **{field: m})
                if all(s.value for s in cf.steps):
                    twin = cf
                    break
        twins.append(twin)
    return twins


def patch_step(
    model,
    examples: Sequence[Example],
    t: int,
    layer: int,
    what: str = "skill",
    choices: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    tokenizer: Tokenizer | None = None,
) -> PatchResult:
    """Swap step t's module (``what``: skill | routing | self) and patch its prompt tokens at ``layer``.

    choices: the modules a twin may use (default: those used at step t in ``examples``, else all);
    each example gets one other than its own, drawn with ``seed``.
    """
    return patch_step_layers(model, examples, t, [layer], what, choices, seed, batch_size, tokenizer)[layer]


def patch_step_layers(
    model,
    examples: Sequence[Example],
    t: int,
    layers: Sequence[int],
    what: str = "skill",
    choices: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    tokenizer: Tokenizer | None = None,
) -> dict[int, PatchResult]:
    """``patch_step`` at each of ``layers`` (same twins); the unpatched generations are run once."""
    if what not in ("skill", "routing", "self"):
        raise ValueError(f"what must be skill, routing or self, got {what!r}")
    tok = tokenizer or Tokenizer()
    for layer in layers:
        layer_module(model, layer)  # validates layer
    exs = [ex for ex in examples if ex.depth >= t]
    if not exs:
        raise ValueError(f"no example has a step t={t}")
    twins = _twins(exs, t, what, choices, seed)
    texts, twin_texts, patched = [], [], {layer: [] for layer in layers}
    for lo in range(0, len(exs), batch_size):
        chunk, twin = exs[lo : lo + batch_size], twins[lo : lo + batch_size]
        prompts = [tok.encode(ex.prompt, bos=True) for ex in chunk]
        twin_prompts = [tok.encode(ex.prompt, bos=True) for ex in twin]
        module_rows = [token_rows(ex, ("routing_token", "skill_token"), tok) for ex in chunk]
        columns = [[p for p, step, _ in rows if step == t] for rows in module_rows]
        texts += _greedy(model, prompts, tok).texts
        twin_texts += _greedy(model, twin_prompts, tok).texts
        for layer in layers:
            donor = prefill_states(model, twin_prompts, layer, tok)
            patched[layer] += patched_generate(model, prompts, layer, columns, donor, tok).texts

    want = [_want_value(ex, t) for ex in exs]
    want_twin = [_want_value(tw, t) for tw in twins]
    arr = lambda xs: np.array(xs, dtype=bool)
    base_ok = arr([_chunk_value(ex, s, t) == w for ex, s, w in zip(exs, texts, want)])
    twin_ok = arr([_chunk_value(tw, s, t) == w for tw, s, w in zip(twins, twin_texts, want_twin)])
    out = {}
    for layer in layers:
        got = [_chunk_value(ex, s, t) for ex, s in zip(exs, patched[layer])]
        out[layer] = PatchResult(
            exs, twins, texts, twin_texts, patched[layer],
            follow=arr([g == w for g, w in zip(got, want_twin)]),
            stay=arr([g == w for g, w in zip(got, want)]),
            differ=arr([a != b for a, b in zip(want, want_twin)]),
            base_ok=base_ok, twin_ok=twin_ok,
        )
    return out
