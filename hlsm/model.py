"""The hierarchical latent selection model: prompt -> latent selections -> trace -> answer.

An item draws an input ``x = h_0`` and a cascade of latent selections, one level per step
t = 1..L: a routing ``r_t`` (which earlier values feed the step and how they combine) and under it a
skill ``s_t`` (the local operation). The selections form a small DAG (``Example.dag``): step t
reads the values its routing names. Executing the cascade gives h_1..h_L; the trace shows them and
the answer is h_L.

Sampling is counter-based (``hlsm.rng``): item i of a stream is a pure function of (seed, stream
name, i), so ``HLSM(...)[i]`` and ``sample(n, start)`` agree, and re-running gives byte-identical
items. Draws are vectorized with numpy; only executing and rendering is per item.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, fields

import numpy as np

from hlsm.modules import MAX_LEN as W
from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS
from hlsm.names import DEFAULT_STREAM
from hlsm.rng import stream_key
from hlsm.support import MAX_ATTEMPTS, N_CODES, Composition, Support
from hlsm.text import check_format, render_tokens


@dataclass(slots=True)
class Step:
    """One latent selection level and the value it generates."""

    t: int  # step index, 1..L
    routing: str  # routing mechanism name
    skill: str  # skill name
    operands: tuple[int, ...]  # indices of the values h_i this step reads
    value: str  # h_t
    span: tuple[int, int] | None  # chars of this step's chunk in Example.completion (None: hidden)
    prompt_span: tuple[int, int]  # chars of this step's module tokens in Example.prompt


@dataclass(slots=True)
class Example:
    """One HLSM item: input, ground-truth selections per step, rendered prompt and completion."""

    index: int  # position in its stream
    x: str  # the input h_0
    steps: tuple[Step, ...]
    prompt: str
    completion: str  # what the model must write: the trace, then '#' and the answer
    answer: str
    format: str  # trace format: explicit | values | answer
    granularity: int  # steps per shown trace chunk

    @property
    def trace(self) -> str:
        """The trace part of the completion (everything before the answer mark)."""
        return self.completion[: self.completion.rfind("#")]

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def composition(self) -> Composition:
        return tuple((s.routing, s.skill) for s in self.steps)

    @property
    def values(self) -> tuple[str, ...]:
        """h_0 .. h_L."""
        return (self.x, *(s.value for s in self.steps))

    def dag(self):
        """The selection DAG as a networkx DiGraph: node t (0 = input) -> step nodes reading it."""
        import networkx as nx

        g = nx.DiGraph()
        g.add_node(0, value=self.x, routing=None, skill=None)
        for s in self.steps:
            g.add_node(s.t, value=s.value, routing=s.routing, skill=s.skill)
            for i in s.operands:
                g.add_edge(i, s.t)
        return g

    def to_dict(self) -> dict:
        """A JSON-ready row: prompt, completion, answer, trace and the selections per step."""
        return {
            "index": self.index,
            "prompt": self.prompt,
            "completion": self.completion,
            "answer": self.answer,
            "trace": self.trace,
            "x": self.x,
            "format": self.format,
            "granularity": self.granularity,
            "selections": [
                {f.name: getattr(s, f.name) for f in fields(Step)} for s in self.steps
            ],
        }


def execute(x: str, composition) -> list[tuple[str, str, tuple[int, ...], str]]:
    """Run a composition on input x: [(routing, skill, operands, value)] per step."""
    h, out = [x], []
    for t, (r, s) in enumerate(composition, 1):
        routing = ROUTINGS[r]
        ops = routing.operands(t)
        v = routing.fn([h[i] for i in ops], SKILLS[s].fn)
        h.append(v)
        out.append((r, s, ops, v))
    return out


def _make_entry(t: int, code: int):
    r, s = ROUTING_NAMES[code // len(SKILL_NAMES)], SKILL_NAMES[code % len(SKILL_NAMES)]
    routing, skill = ROUTINGS[r], SKILLS[s]
    return r, s, routing.operands(t), routing.fn, skill.fn, routing.token + skill.token


# Per (step t, step code) everything the hot loop needs, so it does no lookups or calls for it.
_T_CACHE = 64
_STEP_TABLE = [[_make_entry(t, c) for c in range(N_CODES)] for t in range(_T_CACHE)]


def _step_entry(t: int, code: int):
    return _STEP_TABLE[t][code] if t < _T_CACHE else _make_entry(t, code)


class HLSM:
    """A seeded HLSM sampler over a ``Support``.

    ``HLSM(depth=3, seed=0)`` samples depth-3 items over the full inventory; every ``Support``
    field can be given as a keyword (``skills``, ``routings``, ``compositions``, ``exclude``,
    ``require``, ``input_len``, ``alphabet``, ...), or a whole ``support=``. ``stream`` names the
    random stream, so train and eval streams of the same seed never share draws.
    """

    def __init__(
        self,
        depth: int | tuple[int, ...] = 3,
        seed: int = 0,
        *,
        support: Support | None = None,
        fmt: str = "values",
        granularity: int = 1,
        stream: str = DEFAULT_STREAM,
        **constraints,
    ):
        if support is not None and constraints:
            raise ValueError(f"give either support= or constraint keywords, not both: {sorted(constraints)}")
        if support is None:
            if "depths" not in constraints:
                constraints["depths"] = depth
            try:
                support = Support(**constraints)
            except TypeError as e:
                raise ValueError(f"bad HLSM constraint: {e}") from None
        check_format(fmt, granularity)
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.support, self.seed, self.fmt, self.granularity, self.stream = (
            support, int(seed), fmt, granularity, stream
        )
        self.key = stream_key(int(seed), stream)
        self._draw(np.arange(1))  # fail now, not in the middle of a run, when the support is empty

    def __repr__(self) -> str:
        return (
            f"HLSM(seed={self.seed}, stream={self.stream!r}, fmt={self.fmt!r}, "
            f"granularity={self.granularity}, support: {self.support.describe()})"
        )

    def __getitem__(self, i: int) -> Example:
        if i < 0:
            raise IndexError(f"HLSM streams are infinite; index must be >= 0, got {i}")
        return self.sample(1, start=i)[0]

    def sample(self, n: int, start: int = 0) -> list[Example]:
        """Items ``start .. start+n-1`` of this stream."""
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        index = np.arange(start, start + n, dtype=np.int64)
        codes, depth, chars, length, _, _ = self._draw(index)
        flat = chars.tobytes().decode("latin-1")
        xs = [flat[i * W : i * W + k] for i, k in enumerate(length.tolist())]
        fmt, g = self.fmt, self.granularity
        out = []
        # The items hold no reference cycles; pausing the cyclic GC while allocating ~10 objects
        # per item halves the sampling time (it would otherwise rescan every young object).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            if g == 1 and fmt != "answer":
                self._fill_one_per_step(out, start, xs, codes, depth, fmt == "explicit")
            else:
                for i, x, row, d in zip(range(start, start + n), xs, codes.tolist(), depth.tolist()):
                    h, sel, toks = [x], [], []
                    for t in range(1, d + 1):
                        r, s, ops, route, skill, tok = _step_entry(t, row[t - 1])
                        v = route([h[k] for k in ops], skill)
                        h.append(v)
                        sel.append((r, s, ops, v))
                        toks.append(tok)
                    prompt, completion, spans, pspans = render_tokens(x, toks, h[1:], fmt, g)
                    steps = tuple(
                        Step(t, r, s, ops, v, spans[t - 1], pspans[t - 1])
                        for t, (r, s, ops, v) in enumerate(sel, 1)
                    )
                    out.append(Example(i, x, steps, prompt, completion, h[-1], fmt, g))
        finally:
            if gc_was_on:
                gc.enable()
        return out

    def sample_batch(self, n: int, start: int = 0):
        """Items ``start .. start+n-1`` as a columnar ``hlsm.batch.Batch`` (granularity 1).

        The same items as ``sample`` (same draws, same values), executed with vectorized numpy;
        ``Batch.tokens(tokenizer)`` renders them to padded token ids for training.
        """
        from hlsm.batch import Batch

        if self.granularity != 1:
            raise ValueError(f"sample_batch supports granularity 1 only, this HLSM has {self.granularity}")
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        index = np.arange(start, start + n, dtype=np.int64)
        codes, depth, x, length, values, value_len = self._draw(index)
        return Batch(start, x, length, codes, depth, values, value_len, self.fmt)

    def _draw(self, index: np.ndarray):
        """Items ``index`` as (codes, depth, input chars (n, W), input length, values, value lengths).

        An item whose cascade would produce an empty value somewhere (e.g. ``drop_first`` on a
        one-letter string; 0.3% of default depth-3 items) is redrawn, composition and input
        together, from a key of its own per attempt: an empty answer would let the completion "#"
        score 1. Items that never produce one are the plain draws of (key, index).
        """
        from hlsm.batch import execute_batch

        codes, depth = self.support.draw_compositions(self.key, index)
        chars, length = self.support.draw_input_arrays(self.key, index)
        x = np.zeros((len(index), W), dtype=np.uint8)
        x[:, : chars.shape[1]] = chars
        values, value_len = execute_batch(x, length, codes, depth)
        todo = np.flatnonzero(_has_empty(value_len, depth))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not len(todo):
                return codes, depth, x, length, values, value_len
            key = stream_key(self.key, "nonempty", attempt)
            c, d = self.support.draw_compositions(key, index[todo])
            ch, ln = self.support.draw_input_arrays(key, index[todo])
            xt = np.zeros((len(todo), W), dtype=np.uint8)
            xt[:, : ch.shape[1]] = ch
            v, vl = execute_batch(xt, ln, c, d)
            codes[todo], depth[todo], x[todo], length[todo], values[todo], value_len[todo] = c, d, xt, ln, v, vl
            todo = todo[_has_empty(vl, d)]
        raise ValueError(
            f"support looks empty: after {MAX_ATTEMPTS} attempts {len(todo)} items still produce an "
            f"empty value (items are redrawn until none of their values is empty): {self.support.describe()}"
        )

    def _fill_one_per_step(self, out, start, xs, codes, depth, explicit: bool) -> None:
        """Hot path for granularity 1: execute and render in one pass (equals ``render_tokens``)."""
        fmt, tok_len = self.fmt, 5  # every module-token pair ("R0S03") is 5 characters
        for i, x, row, d in zip(range(start, start + len(xs)), xs, codes.tolist(), depth.tolist()):
            h, segs, toks, steps = [x], [], [], []
            pos, ppos = 0, len(x) + 1
            for t in range(1, d + 1):
                r, s, ops, route, skill, tok = _step_entry(t, row[t - 1])
                v = route([h[k] for k in ops], skill)
                h.append(v)
                toks.append(tok)
                seg = tok + "=" + v if explicit else v
                segs.append(seg)
                end = pos + len(seg)
                steps.append(Step(t, r, s, ops, v, (pos, end), (ppos, ppos + tok_len)))
                pos, ppos = end + 1, ppos + tok_len + 1
            prompt = x + "|" + " ".join(toks) + ">"
            out.append(Example(i, x, tuple(steps), prompt, ";".join(segs) + ";#" + v, v, fmt, 1))


def _has_empty(value_len: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Per item: does some h_1..h_L come out empty? (value_len (n, L) from ``execute_batch``)."""
    live = np.arange(value_len.shape[1])[None, :] < depth[:, None]
    return ((value_len == 0) & live).any(axis=1)


def export_jsonl(source, path, n: int, seed: int = 0, stream: str | None = None, **kwargs) -> int:
    """Write ``n`` items as JSONL rows (prompt, completion, answer, trace, selections).

    ``source`` is a ``Support``, an ``HLSM``, or a (``Split``, support name) pair. ``stream``
    defaults to "train" for a Support and to ``split.stream(name)`` for a split support: the items
    a trainer draws from a training support, or those ``evaluate`` scores on an evaluation one.
    Returns the number of rows written.
    """
    import json

    from hlsm.support import Split

    if isinstance(source, HLSM):
        gen = source
    elif isinstance(source, Support):
        gen = HLSM(support=source, seed=seed, stream=stream or DEFAULT_STREAM, **kwargs)
    elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], Split):
        split, name = source
        gen = HLSM(support=split.support(name), seed=seed, stream=stream or split.stream(name), **kwargs)
    else:
        raise ValueError(f"export_jsonl needs a Support, an HLSM or (Split, name), got {source!r}")
    with open(path, "w") as f:
        for start in range(0, n, 10_000):
            for ex in gen.sample(min(10_000, n - start), start=start):
                f.write(json.dumps(ex.to_dict()) + "\n")
    return n
