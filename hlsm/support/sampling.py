"""Vectorized draws from a support: rejection sampling on counter-based uniforms.

Every draw is a pure function of (key, item index): ``hlsm.rng.uniforms`` gives each item and
attempt its own numbers, so item ``i`` comes out the same whatever batch it is drawn in. A
candidate comes from the product distribution (uniform depth, uniform routing and skill per step,
uniform length and characters) and is redrawn, with the next attempt counter, until the support
accepts it. ``Support.draw_compositions`` and friends are thin methods over these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hlsm.modules import SKILL_NAMES
from hlsm.rng import N_BUCKETS, composition_buckets, input_buckets, stream_key, uniforms
from hlsm.support.composition import _ROUTING_INDEX, _SKILL_INDEX, N_CODES, Composition, code, decode

if TYPE_CHECKING:
    from hlsm.support.set import Support

MAX_ATTEMPTS = 400  # rejection rounds before a support is declared (practically) empty


def draw_compositions(support: Support, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compositions for items ``index`` as (codes (n, max_depth) int64, depth (n,) int64).

    A pure function of (key, index): rejection sampling from the product distribution
    (uniform depth, uniform routing and skill per step) with per-item attempt counters.
    """
    n, max_d = len(index), max(support.depths)
    codes = np.zeros((n, max_d), dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    if support._explicit is not None:  # a listed support: one uniform pick from the list, no rejection
        table, table_depth = _explicit_arrays(support)
        u = uniforms(key, 1, index, 0, 1)[:, 0]
        j = np.minimum((u * len(table)).astype(np.int64), len(table) - 1)
        return table[j], table_depth[j]
    r_ids = np.array([_ROUTING_INDEX[r] for r in support.routings])
    s_ids = np.array([_SKILL_INDEX[s] for s in support.skills])
    depths = np.array(support.depths)
    todo = np.arange(n)
    for attempt in range(MAX_ATTEMPTS):
        u = uniforms(key, 1, index[todo], attempt, 1 + 2 * max_d)
        d = depths[np.minimum((u[:, 0] * len(depths)).astype(np.int64), len(depths) - 1)]
        ri = np.minimum((u[:, 1::2] * len(r_ids)).astype(np.int64), len(r_ids) - 1)
        si = np.minimum((u[:, 2::2] * len(s_ids)).astype(np.int64), len(s_ids) - 1)
        c = r_ids[ri] * len(SKILL_NAMES) + s_ids[si]
        c[np.arange(max_d)[None, :] >= d[:, None]] = 0
        ok = _accept(support, c, d)
        codes[todo[ok]], depth[todo[ok]] = c[ok], d[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            return codes, depth
    raise ValueError(
        f"support looks empty: after {MAX_ATTEMPTS} rejection rounds {len(todo)} items found no "
        f"composition satisfying {support.describe()}"
    )


def _explicit_arrays(support: Support) -> tuple[np.ndarray, np.ndarray]:
    """The listed compositions as (codes (k, max_depth), zero-padded; depth (k,))."""
    max_d = max(support.depths)
    table = np.zeros((len(support._explicit), max_d), dtype=np.int64)
    for i, comp in enumerate(support._explicit):
        table[i, : len(comp)] = [code(r, s) for r, s in comp]
    return table, np.array([len(c) for c in support._explicit], dtype=np.int64)


def _accept(support: Support, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Which candidate compositions pass the filters the product draw does not already enforce."""
    ok = np.ones(len(d), dtype=bool)
    if support.buckets != (0, N_BUCKETS):
        b = composition_buckets(c, d, support.partition_seed)
        ok &= (b >= support.buckets[0]) & (b < support.buckets[1])
    if support.require:
        needed = np.zeros(N_CODES, dtype=bool)
        for k in range(N_CODES):
            r, s = decode(k)
            needed[k] = r in support.require or s in support.require
        live = np.arange(c.shape[1])[None, :] < d[:, None]
        ok &= (needed[c] & live).any(axis=1)
    if support.exclude:
        banned = {tuple(code(r, s) for r, s in comp) for comp in support.exclude}
        for i in np.flatnonzero(ok):
            if tuple(c[i, : d[i]].tolist()) in banned:
                ok[i] = False
    return ok


def draw_inputs(support: Support, key: int, index: np.ndarray) -> list[str]:
    """Input strings for items ``index``: uniform length, uniform characters, hash-filtered."""
    chars, length = draw_input_arrays(support, key, index)
    w = chars.shape[1]
    flat = chars.tobytes().decode("latin-1")
    return [flat[i * w : i * w + k] for i, k in enumerate(length.tolist())]


def draw_input_arrays(support: Support, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``draw_inputs`` as (chars (n, max_len) uint8, zero-padded; length (n,))."""
    n, lo, hi = len(index), support.input_len[0], support.input_len[1]
    alpha = np.frombuffer(support.alphabet.encode(), dtype=np.uint8)
    chars = np.zeros((n, hi), dtype=np.uint8)
    length = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    for attempt in range(MAX_ATTEMPTS):
        u = uniforms(key, 0, index[todo], attempt, 1 + hi)
        ln = lo + np.minimum((u[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
        ch = alpha[np.minimum((u[:, 1:] * len(alpha)).astype(np.int64), len(alpha) - 1)]
        ch[np.arange(hi)[None, :] >= ln[:, None]] = 0
        ok = np.ones(len(todo), dtype=bool)
        if support.input_buckets != (0, N_BUCKETS):
            b = input_buckets(ch, ln, support.partition_seed)
            ok = (b >= support.input_buckets[0]) & (b < support.input_buckets[1])
        chars[todo[ok]], length[todo[ok]] = ch[ok], ln[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            break
    else:
        raise ValueError(f"input space looks empty under {support.describe()}")
    return chars, length


def sample_compositions(support: Support, n: int, seed: int = 0) -> list[Composition]:
    """``n`` distinct compositions of the support (fewer if it has fewer), deterministic."""
    key, out, seen, start, stale = stream_key("compositions", seed), [], set(), 0, 0
    while len(out) < n and start < 50 * n + 10_000 and stale < 3:
        idx = np.arange(start, start + 4 * n + 64)
        codes, depth = draw_compositions(support, key, idx)
        before = len(out)
        for row, d in zip(codes.tolist(), depth.tolist()):
            comp = tuple(decode(k) for k in row[:d])
            if comp not in seen:
                seen.add(comp)
                out.append(comp)
                if len(out) == n:
                    break
        stale = stale + 1 if len(out) == before else 0  # the support is likely exhausted
        start = idx[-1] + 1
    return out
