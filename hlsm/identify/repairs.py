"""Support algebra: ``compare`` (RL inside vs beyond SFT, what the union adds) and ``repair``.

``repair`` looks in a pool for compositions whose addition makes a target reachable: greedy, or
exact (every subset by increasing size, so the first fix found is a minimum).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from hlsm.identify.algebra import _Block, _rank
from hlsm.identify.parse import compositions_of, interfaces_of, union, units_of
from hlsm.identify.results import Identification, Reachability, identify
from hlsm.support import Composition, Support, as_composition, is_inside

EXACT_LIMIT = 200_000  # most subsets ``repair(exact=True)`` will examine


@dataclass(frozen=True)
class Comparison:
    """RL inside vs beyond the SFT support, and what RL adds to identification and coverage."""

    n_sft: int  # distinct SFT compositions
    n_rl: int  # distinct RL compositions
    rl_inside: int  # RL compositions that are SFT compositions
    rl_beyond: int  # RL compositions outside the SFT support
    support_inside: bool | None  # hlsm.support.is_inside(rl, sft) when both are Support objects
    new_modules: tuple[str, ...]  # modules RL uses that SFT never does
    new_interfaces: tuple[tuple[str, str], ...]  # interfaces RL covers that SFT does not
    identified_sft: tuple[str, ...]  # units SFT alone identifies
    identified_union: tuple[str, ...]  # units SFT + RL identify
    gained: tuple[str, ...]  # identified by SFT + RL but not by SFT alone
    n_targets: int  # target compositions checked (0: none given)
    reachable_sft: int  # targets reachable from SFT alone
    reachable_union: int  # targets reachable from SFT + RL


def compare(sft, rl, targets=(), *, positional=False, interface="module", n=3000, seed=0):
    """Support algebra: is RL inside or beyond SFT, and what does the union add?"""
    a, b = compositions_of(sft, n, seed), compositions_of(rl, n, seed)
    tg = compositions_of(targets, n, seed) if targets else []
    depth = max(len(c) for c in [*a, *b, *tg])
    kw = dict(positional=positional, interface=interface, max_depth=depth)
    i_a, i_u = identify(a, **kw), identify(union(a, b), **kw)
    sa = set(a)
    inside = sum(c in sa for c in b)
    mods_a = {m for c in a for step in c for m in step}
    inside_support = is_inside(rl, sft) if isinstance(rl, Support) and isinstance(sft, Support) else None
    return Comparison(
        n_sft=len(a),
        n_rl=len(b),
        rl_inside=inside,
        rl_beyond=len(b) - inside,
        support_inside=inside_support,
        new_modules=tuple(sorted({m for c in b for step in c for m in step} - mods_a)),
        new_interfaces=tuple(sorted(i_u.interfaces.keys() - i_a.interfaces.keys())),
        identified_sft=i_a.identified,
        identified_union=i_u.identified,
        gained=tuple(u for u in i_u.identified if not i_a.units[u].identified),
        n_targets=len(tg),
        reachable_sft=sum(i_a.reach(c).reachable for c in tg),
        reachable_union=sum(i_u.reach(c).reachable for c in tg),
    )


@dataclass(frozen=True)
class Repair:
    """Compositions whose addition to the support makes a target reachable."""

    target: Composition
    added: tuple[Composition, ...]  # compositions to add, in the order chosen
    found: bool  # the additions make the target reachable
    method: str  # "greedy" or "exact" (exact: no smaller set from the pool works)
    searched: int  # candidate evaluations (greedy) or subsets examined (exact)
    before: Reachability  # the target from the support alone
    after: Reachability  # the target from support + added (recomputed exactly)


def _target_state(ident: Identification, target: Composition):
    """Per kind: the null basis, the target's unit columns in it, and its missing interfaces."""
    state = {}
    for kind, units in units_of(target, ident.positional).items():
        b = ident._block(kind)
        col = b.col
        state[kind] = (b, col, [[v[col[u]] for v in b.null] for u in units])
    return state, set(interfaces_of(target, ident.interface)) - ident.interfaces.keys()


def _null_image(b: _Block, col: dict, comp: Composition, positional: bool) -> list[int]:
    """w = a . N for a composition's row a in block b: zero iff the row adds no information."""
    row = units_of(comp, positional)[b.kind]
    cols = [(col[u], c) for u, c in row.items()]
    return [sum(c * v[j] for j, c in cols) for v in b.null]


def repair(support, target, pool, *, max_add: int = 5, exact: bool = False, positional: bool = False,
           interface: str = "module", n: int = 3000, seed: int = 0) -> Repair:
    """Compositions from ``pool`` whose addition to ``support`` makes ``target`` reachable.

    Greedy: repeatedly add the candidate with the largest gain (missing interfaces it covers plus,
    per kind, 1 if it lowers the rank of the null space restricted to the target's units), ties
    broken by any rank gain; stops when reachable, after ``max_add``, or when nothing helps.
    Exact: all subsets of the pool of size 1, 2, ... ``max_add``; the first that works is a
    minimum. The target itself and compositions already in the support are never candidates.
    """
    target = as_composition(target)
    base = compositions_of(support, n, seed)
    have = set(base)
    cands = [c for c in compositions_of(pool, n, seed) if c not in have and c != target]
    depth = max(len(c) for c in [*base, *cands, target])
    kw = dict(positional=positional, interface=interface, max_depth=depth)
    ident = identify(base, **kw)
    before = ident.reach(target)
    if before.reachable:
        return Repair(target, (), True, "exact" if exact else "greedy", 0, before, before)
    keys = {c: interfaces_of(c, interface) for c in cands}
    if exact:
        added, searched = _exact_cover(ident, target, cands, keys, max_add)
    else:
        added, searched = _greedy_cover(ident, target, cands, keys, max_add, base, kw)
    after = identify(base + list(added), **kw).reach(target)
    return Repair(target, tuple(added), after.reachable, "exact" if exact else "greedy", searched,
                  before, after)


def _greedy_cover(ident, target, cands, keys, max_add, base, kw):
    """Add the best candidate, re-identify, repeat: until reachable, ``max_add`` added, or none helps."""
    added, searched = [], 0
    for _ in range(max_add):
        rest = [c for c in cands if c not in added]
        searched += len(rest)
        best = _best_candidate(ident, target, rest, keys)
        if best is None:
            break
        added.append(best)
        ident = identify(base + added, **kw)
        if ident.reach(target).reachable:
            break
    return added, searched


def _best_candidate(ident, target, cands, keys):
    """The candidate with the largest (gain, rank gain), or None when every score is (0, 0).

    gain: the target's missing interfaces it covers, plus 1 per kind where it lowers the rank of the
    null space restricted to the target's units; rank gain: the kinds where its row adds any rank.
    """
    state, missing = _target_state(ident, target)
    spans = {k: _rank(m) for k, (_, _, m) in state.items()}
    best, best_score = None, (0, 0)
    for c in cands:
        gain, rank_gain = len(keys[c] & missing), 0
        for kind, (b, col, m) in state.items():
            w = _null_image(b, col, c, ident.positional)
            if any(w):
                rank_gain += 1
                gain += bool(spans[kind]) and _rank([*m, w]) == spans[kind]
        if (gain, rank_gain) > best_score:
            best, best_score = c, (gain, rank_gain)
    return best


def _exact_cover(ident, target, cands, keys, max_add):
    """The first subset, by increasing size, that covers the missing interfaces and identifies."""
    state, missing = _target_state(ident, target)
    pos = ident.positional
    images = {k: [_null_image(b, col, c, pos) for c in cands] for k, (b, col, _) in state.items()}
    total = sum(math.comb(len(cands), k) for k in range(1, max_add + 1))
    if total > EXACT_LIMIT:
        raise ValueError(
            f"exact search over {len(cands)} candidates up to size {max_add} means {total} subsets "
            f"(limit {EXACT_LIMIT}); use greedy, a smaller pool or a smaller max_add"
        )
    searched = 0
    for size in range(1, max_add + 1):
        for subset in itertools.combinations(range(len(cands)), size):
            searched += 1
            if not missing <= set().union(*(keys[cands[i]] for i in subset)):
                continue
            ok = True
            for kind, (_, _, m) in state.items():
                W = [images[kind][i] for i in subset]
                if any(map(any, m)) and _rank([*W, *m]) != _rank(W):
                    ok = False
                    break
            if ok:
                return [cands[i] for i in subset], searched
    return [], searched
