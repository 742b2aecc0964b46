"""Capture a policy's residual stream at every layer, each token labelled with the step that made it.

    acts = capture(model, examples, kinds=("before",), seen=split.train["sft"].contains)
    acts.X                     # (n_layers, N, n_embd) float32: [embeddings, block 1.., final norm]
    acts.skill, acts.routing   # (N,) int: index into SKILL_NAMES / ROUTING_NAMES
    acts.step, acts.depth      # (N,) int: step index t (1..L) and the example's depth L
    acts.seen                  # (N,) bool: the example's composition was seen in training
    acts.example, acts.pos     # (N,) int: which example, which token position in its sequence

A sequence is ``<bos> prompt completion <eos>`` exactly as SFT trains on it (hlsm.sft), and
``pos`` indexes it. Rows are (position, step) pairs of these kinds:

    routing_token  the token naming the step's routing in the prompt (``R0``..``R9``)
    skill_token    the token naming the step's skill in the prompt (``S00``..``S23``). At these two
                   the token *is* the label: a probe reads the surface (leakage), not a representation.
    before         the token just before the step's chunk (``>`` for step 1, else the ``;`` closing
                   the previous chunk): the position whose next-token prediction starts the step.
                   Nothing at or before it shows the step's value yet, though attention can read
                   the prompt's module tokens (the recommended position, docs/design.md §probes).
    first          the step's first completion token (the first character of its value; in the
                   ``explicit`` format its routing token, which names the module again).
    step           every token of the step's chunk in the completion.

With granularity g > 1 the g steps of a chunk share its tokens, so a completion position gives one
row per step it covers. Empty values have no ``first``/``step`` rows; the ``answer`` format has
no chunks, so only ``routing_token`` / ``skill_token`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from hlsm.modules import ROUTING_NAMES, SKILL_NAMES
from hlsm.policy import layer_names, unwrap  # noqa: F401 -- layer_names re-exported (old home)
from hlsm.text import Tokenizer

KINDS = ("routing_token", "skill_token", "before", "first", "step")
SKILL_INDEX = {s: i for i, s in enumerate(SKILL_NAMES)}
ROUTING_INDEX = {r: i for i, r in enumerate(ROUTING_NAMES)}
LABELS = ("skill", "routing", "step", "depth", "seen", "example", "pos", "kind", "token", "prev")  # per row


@dataclass
class Activations:
    """Activations (n_layers, N, d) and per-row labels; every label array is (N,)."""

    X: np.ndarray  # (n_layers, N, d) float32 residual stream
    layer_names: list[str]  # "emb", "block1", ..., "ln_f" (or the selected subset)
    skill: np.ndarray  # index into SKILL_NAMES
    routing: np.ndarray  # index into ROUTING_NAMES
    step: np.ndarray  # step index t, 1..L
    depth: np.ndarray  # depth L of the example
    seen: np.ndarray  # bool: composition seen in training
    example: np.ndarray  # index of the example in the captured list (group for cross-validation)
    pos: np.ndarray  # token position in <bos> prompt completion <eos>
    kind: np.ndarray  # index into KINDS
    token: np.ndarray  # token id at pos
    prev: np.ndarray  # token id at pos - 1 (-1 at position 0)

    def __len__(self) -> int:
        return len(self.skill)

    def select(self, mask: np.ndarray) -> Activations:
        """The rows where ``mask`` (bool or index array) holds."""
        keep = [f.name for f in fields(self) if f.name not in ("X", "layer_names")]
        rows = {name: getattr(self, name)[mask] for name in keep}
        return Activations(X=self.X[:, mask], layer_names=list(self.layer_names), **rows)

    def labels(self, target: str) -> np.ndarray:
        """The label array of ``target``: "skill", "routing", "step" or "depth"."""
        if target not in ("skill", "routing", "step", "depth"):
            raise ValueError(f"unknown target {target!r}; allowed: skill, routing, step, depth")
        return getattr(self, target)


def _seen_fn(seen) -> Callable:
    if seen is None:
        return lambda comp: False
    if callable(seen):
        return seen
    comps = {tuple((r, s) for r, s in c) for c in seen}
    return lambda comp: comp in comps


def token_rows(ex, kinds: Sequence[str] = KINDS, tok: Tokenizer | None = None) -> list[tuple[int, int, int]]:
    """(position, step index t, kind index) of every row ``ex`` contributes, in sequence order per kind.

    Positions are in ``<bos> prompt completion <eos>``: prompt token i is at i + 1, completion token
    i at prompt_len + i where prompt_len counts <bos>.
    """
    tok = tok or Tokenizer()
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown position kinds {bad}; allowed: {', '.join(KINDS)}")
    plen = len(tok.tokens(ex.prompt)) + 1
    rows = []
    for st in ex.steps:
        if "routing_token" in kinds or "skill_token" in kinds:
            i, j = tok.token_span(ex.prompt, st.prompt_span)
            if j - i != 2:
                raise ValueError(f"step {st.t} of {ex.prompt!r}: prompt_span covers {j - i} tokens, not 2")
            for k, name in enumerate(("routing_token", "skill_token")):  # R then S
                if name in kinds:
                    rows.append((1 + i + k, st.t, KINDS.index(name)))
        if st.span is None:  # answer format: no chunk in the completion
            continue
        i, j = tok.token_span(ex.completion, st.span)
        if "before" in kinds:
            rows.append((plen + i - 1, st.t, KINDS.index("before")))
        if "first" in kinds and j > i:
            rows.append((plen + i, st.t, KINDS.index("first")))
        if "step" in kinds:
            rows += [(plen + p, st.t, KINDS.index("step")) for p in range(i, j)]
    return rows


@torch.no_grad()
def capture(
    model,
    examples: Sequence,
    kinds: Iterable[str] = ("before",),
    seen=None,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    device=None,
    tokenizer: Tokenizer | None = None,
) -> Activations:
    """Residual-stream activations of ``model`` on ``examples`` at the rows of the given position kinds.

    seen: None (all False), a predicate composition -> bool (e.g. ``Support.contains``) or a
        collection of compositions seen in training.
    layers: indices into [emb, block1.., ln_f] to keep (default all); memory is
        len(layers) * rows * n_embd * 4 bytes, preallocated once and filled batch by batch.
    device: where the forward runs (default: the model's device). Runs in fp32 (no autocast) so
        CPU and CUDA give the same numbers up to kernel rounding.
    """
    tok = tokenizer or Tokenizer()
    kinds = tuple(kinds)
    base = unwrap(model)
    device = torch.device(device) if device is not None else next(base.parameters()).device
    names = base.layer_names()
    layers = list(range(len(names))) if layers is None else [int(i) for i in layers]
    if not layers or min(layers) < 0 or max(layers) >= len(names):
        raise ValueError(f"layers must index into {names}, got {layers}")
    # Labels first (cheap, no model): they fix N, so the activation array is allocated once.
    seqs, per_ex, lab = _labels(examples, kinds, tok, _seen_fn(seen), base.config.block_size)
    n = sum(len(r) for r in per_ex)
    X = np.zeros((len(layers), n, base.config.n_embd), dtype=np.float32)
    was_training = base.training
    base.eval()
    try:
        _fill(X, base, seqs, per_ex, layers, batch_size, device, tok.pad_id)
    finally:
        base.train(was_training)
    arr = {k: np.asarray(v, dtype=bool if k == "seen" else np.int64) for k, v in lab.items()}
    return Activations(X=X, layer_names=[names[i] for i in layers], **arr)


def _labels(examples: Sequence, kinds: tuple, tok: Tokenizer, is_seen, block_size: int):
    """(token ids per example, its (pos, step, kind) rows, the label lists of all rows, in order)."""
    seqs, per_ex, lab = [], [], {k: [] for k in LABELS}
    for e, ex in enumerate(examples):
        ids, _ = tok.encode_item(ex)
        if len(ids) > block_size:
            raise ValueError(f"example {e} has {len(ids)} tokens > block_size={block_size}")
        rows = token_rows(ex, kinds, tok)
        seqs.append(ids)
        per_ex.append(rows)
        s_ = bool(is_seen(ex.composition))
        for p, t, k in rows:
            st = ex.steps[t - 1]
            for key, v in (("skill", SKILL_INDEX[st.skill]), ("routing", ROUTING_INDEX[st.routing]),
                           ("step", t), ("depth", ex.depth), ("seen", s_), ("example", e), ("pos", p),
                           ("kind", k), ("token", ids[p]), ("prev", ids[p - 1] if p else -1)):
                lab[key].append(v)
    return seqs, per_ex, lab


def _fill(X: np.ndarray, base, seqs: list, per_ex: list, layers: list, batch_size: int, device, pad_id: int):
    """Forward the examples batch by batch and write each row's residual stream at ``layers`` into X."""
    row = 0
    for lo in range(0, len(seqs), batch_size):
        chunk = range(lo, min(lo + batch_size, len(seqs)))
        # right padding: with a causal mask, padding after a row's tokens never reaches them
        width = max(len(seqs[e]) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for b, e in enumerate(chunk):
            ids[b, : len(seqs[e])] = torch.tensor(seqs[e])
        _, hidden = base(ids.to(device), return_hidden=True)
        b_idx = np.concatenate([[b] * len(per_ex[e]) for b, e in enumerate(chunk)]).astype(np.int64)
        p_idx = np.array([p for e in chunk for p, _, _ in per_ex[e]], dtype=np.int64)
        if len(b_idx) == 0:
            continue
        bi, pi = torch.from_numpy(b_idx).to(device), torch.from_numpy(p_idx).to(device)
        for li, layer in enumerate(layers):
            X[li, row : row + len(b_idx)] = hidden[layer][bi, pi].float().cpu().numpy()
        row += len(b_idx)
