"""Drift between two checkpoints (e.g. SFT vs SFT+GRPO): outputs, parameters, per-module accuracy.

    output_kl(base, run, examples)         # mean per-token KL(base || run) on golden completions
    rows = param_stats(run, base)          # per tensor: norm, relative change, effective ranks
    by_layer(rows)                         # the same aggregated per layer (emb, block1.., ln_f)
    profile_delta(accuracy_profile(base, split), accuracy_profile(run, split))   # per skill / routing
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from hlsm.modules import ROUTINGS, SKILLS
from hlsm.policy import Policy, unwrap
from hlsm.sft import encode_examples
from hlsm.text import Tokenizer


@torch.no_grad()
def output_kl(model_p, model_q, examples, batch_size: int = 64, tokenizer: Tokenizer | None = None) -> float:
    """Mean over completion positions (<eos> included) of KL(p || q) of the next-token distributions.

    Teacher forcing on the golden ``<bos> prompt completion <eos>`` of each example, fp32, each
    model on its own device. A model compared with itself gives exactly 0.
    """
    tok = tokenizer or Tokenizer()
    total, count = 0.0, 0
    for lo in range(0, len(examples), batch_size):
        ids, plen, length = encode_examples(tok, examples[lo : lo + batch_size])
        x = torch.from_numpy(ids[:, :-1])
        j = np.arange(1, ids.shape[1])[None, :]  # position j predicts token j (input j - 1)
        mask = torch.from_numpy((j >= plen[:, None]) & (j < length[:, None]))
        logp = []
        for m in (model_p, model_q):
            base = unwrap(m)
            was_training = base.training
            base.eval()
            dev = next(base.parameters()).device
            logp.append(torch.log_softmax(base(x.to(dev)).float(), dim=-1).cpu())
            base.train(was_training)
        kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1)
        total += float(kl[mask].double().sum())
        count += int(mask.sum())
    return total / max(count, 1)


# The layer a parameter belongs to (emb, block1.., ln_f): the policy's own answer, kept under its old name.
param_layer = Policy.param_layer


def effective_rank(w: torch.Tensor) -> float:
    """exp(entropy of the normalized singular values) (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = torch.linalg.svdvals(w.detach().double().cpu())
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def param_stats(model, base=None) -> list[dict]:
    """One row per parameter tensor: layer, name, shape, norm, effective rank (matrices), and
    with ``base`` its base norm, delta norm ||W - W_base||, relative change and the delta's
    effective rank (is the update low-rank?). Tied weights count once.
    """
    ref = dict(unwrap(base).named_parameters()) if base is not None else {}
    rows, model = [], unwrap(model)
    for name, p in model.named_parameters():
        w = p.detach().double().cpu()
        row = {"layer": model.param_layer(name), "name": name, "shape": tuple(w.shape), "norm": float(w.norm()),
               "eff_rank": effective_rank(w) if w.dim() == 2 else float("nan")}
        if base is not None:
            if name not in ref or ref[name].shape != p.shape:
                raise ValueError(f"parameter {name} is missing or has another shape in the base model")
            d = w - ref[name].detach().double().cpu()
            b = float(ref[name].detach().double().norm())
            row.update(base_norm=b, delta_norm=float(d.norm()), rel_change=float(d.norm()) / b if b else 0.0,
                       delta_eff_rank=effective_rank(d) if w.dim() == 2 else float("nan"))
        rows.append(row)
    return rows


def by_layer(rows: list[dict]) -> list[dict]:
    """``param_stats`` rows aggregated per layer: norms in quadrature, mean effective rank of matrices."""
    groups = defaultdict(list)
    for r in rows:
        groups[r["layer"]].append(r)
    out = []
    for layer, rs in groups.items():
        mats = [r for r in rs if len(r["shape"]) == 2]
        agg = {"layer": layer, "n_params": int(sum(np.prod(r["shape"]) for r in rs)),
               "norm": float(np.sqrt(sum(r["norm"] ** 2 for r in rs))),
               "eff_rank": float(np.mean([r["eff_rank"] for r in mats])) if mats else float("nan")}
        if "delta_norm" in rs[0]:
            base = np.sqrt(sum(r["base_norm"] ** 2 for r in rs))
            delta = np.sqrt(sum(r["delta_norm"] ** 2 for r in rs))
            d_rank = float(np.mean([r["delta_eff_rank"] for r in mats])) if mats else float("nan")
            agg.update(delta_norm=float(delta), rel_change=float(delta / base) if base else 0.0,
                       delta_eff_rank=d_rank)
        out.append(agg)
    return out


def accuracy_profile(model, split, supports=("seen", "unseen"), n: int = 256, seed: int = 0,
                     fmt: str = "values", granularity: int = 1) -> list[dict]:
    """hlsm.evaluate rows grouped by module: per support and skill / routing, answer and step accuracy."""
    from hlsm.evaluate import evaluate

    return evaluate(model, split, supports, n=n, seed=seed, fmt=fmt, granularity=granularity, by=("module",))


def profile_delta(base_rows: list[dict], run_rows: list[dict], metric: str = "step") -> list[dict]:
    """Per (support, module) in both profiles: kind (skill | routing), n, base, run and run - base."""
    base = {(r["support"], r["group"]): r for r in base_rows if r["by"] == "module"}
    out = []
    for r in run_rows:
        key = (r["support"], r["group"])
        if r["by"] != "module" or key not in base:
            continue
        kind = "skill" if r["group"] in SKILLS else "routing" if r["group"] in ROUTINGS else "?"
        a, b = base[key][metric], r[metric]
        out.append({"support": key[0], "module": key[1], "kind": kind, "n": r["n"], "base": a, "run": b,
                    "delta": b - a})
    return out
