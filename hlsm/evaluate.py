"""Evaluation: accuracy by split support, depth, composition and module, as a tidy table.

    rows = evaluate(model, split, supports=("seen", "unseen"), n=512, samples=8, pass_k=(1, 8))
    lookup(rows, "unseen")["answer"]        # greedy exact-answer accuracy on that support
    write_csv(rows, "eval.csv")

Each row is one (support, by, group): ``by`` is "all", "depth", "composition" or "module" and
``group`` the depth / composition / module name. Metrics are means over the group's items:
``answer`` (greedy exact answer, ``hlsm.text.score``), ``format`` and ``structure`` (the other
``hlsm.text.REWARDS``), ``step`` (fraction of trace steps whose shown value is right; for a
module row only the steps that use that module), ``right_answer_wrong_trace`` (items whose answer
is right but some shown step is wrong) and ``pass@k`` (unbiased estimator over
``samples`` sampled completions at ``temperature``). ``form/<f>`` is the share of greedy completions
that take form f (``hlsm.text.FORMS``: explicit and values write every step out, chunked fewer chunks
than steps, answer only the answer), ``sampled_form/<f>`` the same over the samples.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import torch

from hlsm.generation import generate
from hlsm.model import HLSM
from hlsm.names import eval_stream
from hlsm.policy import unwrap
from hlsm.text import FORMS, REWARDS, Tokenizer, expected_chunks, format_kw, parse_completion, trace_form

BY = ("all", "depth", "composition", "module")


def composition_name(comp) -> str:
    """A compact, CSV-safe name: routing.skill per step, joined by '+'."""
    return "+".join(f"{r}.{s}" for r, s in comp)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def step_correct(example, completion: str) -> list[bool] | None:
    """Per step of ``example``: is the trace chunk showing it right? None in the answer format."""
    want = expected_chunks(example)
    if not want:
        return None
    got = parse_completion(completion, example.format).chunks
    g = example.granularity
    ok = [
        c < len(got) and got[c][1] == wv and (wm is None or got[c][0] == wm)
        for c, (wm, wv) in enumerate(want)
    ]
    return [ok[t // g] for t in range(example.depth)]


def _max_new(model, prompts) -> int:
    return unwrap(model).config.block_size - max(len(p) for p in prompts)


def score_examples(
    model,
    examples,
    samples: int = 0,
    pass_k: tuple[int, ...] = (),
    temperature: float = 1.0,
    batch_size: int = 256,
    max_new_tokens: int | None = None,
    generator_seed: int = 0,
    tokenizer: Tokenizer | None = None,
) -> list[dict]:
    """One record per example: greedy completion and its scores, plus pass@k when sampling."""
    tok = tokenizer or Tokenizer()
    if pass_k and samples < max(pass_k):
        raise ValueError(f"pass_k={pass_k} needs samples >= {max(pass_k)}, got samples={samples}")
    gen = torch.Generator().manual_seed(generator_seed)
    records = []
    for lo in range(0, len(examples), batch_size):
        chunk = examples[lo : lo + batch_size]
        prompts = [tok.encode(ex.prompt, bos=True) for ex in chunk]
        m = max_new_tokens or _max_new(model, prompts)
        ends = dict(eos_id=tok.eos_id, pad_id=tok.pad_id, tokenizer=tok)
        greedy = generate(model, prompts, m, temperature=0.0, **ends)
        sampled = None
        if samples:
            sampled = generate(
                model, prompts, m, temperature=temperature, num_samples=samples, generator=gen, **ends
            )
        for i, (ex, text) in enumerate(zip(chunk, greedy.texts)):
            rec = {
                "example": ex,
                "completion": text,
                **{name: float(fn(ex, text)) for name, fn in REWARDS.items()},
                "steps": step_correct(ex, text),
                **{f"form/{f}": float(trace_form(text, ex.depth) == f) for f in FORMS},
            }
            if sampled is not None:
                texts = sampled.texts[i * samples : (i + 1) * samples]
                c = sum(REWARDS["answer"](ex, t) == 1.0 for t in texts)
                rec["correct_samples"] = c
                forms = [trace_form(t, ex.depth) for t in texts]
                rec.update({f"sampled_form/{f}": forms.count(f) / samples for f in FORMS})
                for k in pass_k:
                    rec[f"pass@{k}"] = pass_at_k(samples, c, k)
            records.append(rec)
    return records


def summarize(records: list[dict], support: str, by: tuple[str, ...] = BY) -> list[dict]:
    """Tidy rows (one per by/group) of mean metrics over ``records`` of one support."""
    for b in by:
        if b not in BY:
            raise ValueError(f"unknown grouping {b!r}; allowed: {', '.join(BY)}")
    metrics = [k for k in records[0] if k in REWARDS or k.startswith(("pass@", "form/", "sampled_form/"))
               ] if records else []
    groups: dict[tuple[str, str], list[tuple[dict, list[bool] | None]]] = defaultdict(list)
    for rec in records:
        ex, steps = rec["example"], rec["steps"]
        if "all" in by:
            groups["all", "all"].append((rec, steps))
        if "depth" in by:
            groups["depth", str(ex.depth)].append((rec, steps))
        if "composition" in by:
            groups["composition", composition_name(ex.composition)].append((rec, steps))
        if "module" in by:
            uses = defaultdict(list)  # module -> indices of the steps using it
            for t, st in enumerate(ex.steps):
                uses[st.skill].append(t)
                uses[st.routing].append(t)
            for name, ts in uses.items():
                groups["module", name].append((rec, None if steps is None else [steps[t] for t in ts]))
    rows = []
    for (b, g), members in sorted(groups.items(), key=lambda kv: (BY.index(kv[0][0]), kv[0][1])):
        row = {"support": support, "by": b, "group": g, "n": len(members)}
        for k in metrics:
            row[k] = sum(rec[k] for rec, _ in members) / len(members)
        flat = [ok for _, steps in members if steps is not None for ok in steps]
        row["step"] = sum(flat) / len(flat) if flat else float("nan")
        # right answer, wrong trace: outcome-only reward cannot tell these from faithful solutions
        traced = [(rec, steps) for rec, steps in members if steps is not None]
        row["right_answer_wrong_trace"] = (sum(rec["answer"] == 1.0 and not all(steps) for rec, steps in traced)
                                           / len(traced) if traced else float("nan"))
        rows.append(row)
    return rows


def eval_items(split, name: str, n: int, seed: int = 0, fmt: str = "values", granularity: int = 1) -> list:
    """The ``n`` items ``evaluate`` scores on support ``name``: the first n of ``eval_stream(name)``."""
    gen = HLSM(support=split.support(name), seed=seed, fmt=fmt, granularity=granularity, stream=eval_stream(name))
    return gen.sample(n)


def evaluate(
    model,
    split,
    supports: tuple[str, ...] | None = None,
    n: int = 256,
    seed: int = 0,
    fmt: str = "values",
    granularity: int = 1,
    by: tuple[str, ...] = BY,
    formats: dict | None = None,
    samples: int = 0,
    pass_k: tuple[int, ...] = (),
    temperature: float = 1.0,
    batch_size: int = 256,
    max_new_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    allow_train: bool = False,
) -> list[dict]:
    """Score ``model`` on ``n`` items of each named evaluation support of ``split`` (default: all).

    Items come from ``HLSM(support=split.support(name), seed=seed, stream=eval_stream(name))``, the
    first ``n`` of the stream, so every call and every checkpoint sees the same items. Support names
    are unique across a split's train and eval dicts, so an evaluation name always reads the
    evaluation support ``Split.check_disjoint`` proves disjoint from training. Items are rendered in
    ``formats[name]`` where given (a run's per-support formats, ``SFTConfig.formats``), else ``fmt``.
    """
    names = tuple(split.eval) if supports is None else tuple(supports)
    if not allow_train:
        for name in names:
            if name not in split.eval:
                hint = f" (did you mean 'eval_{name}'?)" if f"eval_{name}" in split.eval else ""
                raise ValueError(
                    f"evaluate: {name!r} is not an evaluation support of split {split.name!r}{hint}; have "
                    f"{sorted(split.eval)} (allow_train=True scores a training support, on fresh items of it)"
                )
    rows = []
    for name in names:
        records = score_examples(
            model, eval_items(split, name, n, seed, **format_kw(formats or {}, name, fmt, granularity)), samples,
            pass_k, temperature, batch_size,
            max_new_tokens, generator_seed=seed, tokenizer=tokenizer,
        )
        rows.extend(summarize(records, name, by))
    return rows


def lookup(rows: list[dict], support: str, by: str = "all", group: str = "all") -> dict:
    """The row of ``support`` / ``by`` / ``group`` (KeyError if absent)."""
    for r in rows:
        if r["support"] == support and r["by"] == by and r["group"] == group:
            return r
    raise KeyError(f"no row for support={support!r} by={by!r} group={group!r}")


def parse_cell(v: str):
    """A CSV cell back as what it was written from: None (empty), bool, int, float, else the string."""
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def read_csv(path: str | Path) -> list[dict]:
    """Rows written by ``write_csv``, numbers as numbers (support, by and group stay strings)."""
    with open(path, newline="") as f:
        return [{k: v if k in ("support", "by", "group") else parse_cell(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Rows as CSV; columns are the union of the rows' keys, in first-seen order."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
