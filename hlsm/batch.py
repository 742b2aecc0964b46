"""Columnar HLSM batches: every skill and routing vectorized over numpy character arrays.

``HLSM.sample`` builds Python ``Example`` objects (~10 us each). A trainer or a data pipeline
needs token arrays, not objects: ``HLSM.sample_batch(n).tokens()`` executes the same items as
fixed-width uint8 character matrices and renders them straight into padded token-id arrays, an
order of magnitude faster. Strings are (m, MAX_LEN) uint8 arrays, zero past each row's length,
with an (m,) length vector. Each function here mirrors its scalar twin in ``hlsm.modules`` exactly
(tests check every one against it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hlsm.modules import MAX_LEN, ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS

W = MAX_LEN
_J = np.arange(W)[None, :]
_LETTER = np.zeros(256, dtype=bool)
_LETTER[97:123] = True


def _table(skill: str) -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    for c in range(97, 123):
        lut[c] = ord(SKILLS[skill].fn(chr(c)))
    return lut


_LUTS = {s: _table(s) for s in ("shift_up", "shift_down", "atbash", "next_vowel")}


def gather(c: np.ndarray, idx: np.ndarray, n: np.ndarray):
    """Row-wise c[i, idx[i, j]] for j < n[i], zero beyond: the building block of every skill."""
    out = np.take_along_axis(c, np.clip(idx, 0, c.shape[1] - 1), axis=1)
    out[_J[:, : out.shape[1]] >= n[:, None]] = 0
    return out, n


def compact(c: np.ndarray, keep: np.ndarray):
    """Keep the marked characters of each row, shifted left."""
    pos = np.cumsum(keep, axis=1) - 1
    out = np.zeros_like(c)
    rows, cols = np.nonzero(keep)
    out[rows, pos[rows, cols]] = c[rows, cols]
    return out, keep.sum(axis=1)


def _skill_vec(name: str, c: np.ndarray, n: np.ndarray):
    J, nn = _J, n[:, None]
    live = J < nn
    if name == "reverse":
        return gather(c, nn - 1 - J, n)
    if name == "rotate_left":
        return gather(c, (J + 1) % np.maximum(nn, 1), n)
    if name == "rotate_right":
        return gather(c, (J - 1) % np.maximum(nn, 1), n)
    if name == "swap_pairs":
        idx = J ^ 1
        return gather(c, np.where(idx < nn, idx, J), n)
    if name == "swap_ends":
        idx = np.where(J == 0, nn - 1, np.where(J == nn - 1, 0, J))
        return gather(c, idx, n)
    if name == "swap_halves":
        return gather(c, (J + nn // 2) % np.maximum(nn, 1), n)
    if name == "riffle":
        return gather(c, np.where(J % 2 == 0, J // 2, (nn + 1) // 2 + J // 2), n)
    if name == "sort_asc":
        return gather(np.sort(np.where(live, c, 255), axis=1), J + 0 * nn, n)
    if name == "sort_desc":
        return np.sort(np.where(live, c, 0), axis=1)[:, ::-1].copy(), n
    if name in _LUTS:
        return _LUTS[name][c], n
    if name == "shift_by_index":
        shifted = ((c.astype(np.int64) - 97 + J) % 26 + 97).astype(np.uint8)
        return np.where(_LETTER[c], shifted, c), n
    if name == "drop_first":
        return gather(c, J + 1, np.maximum(n - 1, 0))
    if name == "drop_last":
        return gather(c, J + 0 * nn, np.maximum(n - 1, 0))
    if name == "dup_first":
        return gather(c, np.maximum(J - 1, 0) + 0 * nn, np.where(n > 0, np.minimum(n + 1, W), 0))
    if name == "dup_last":
        return gather(c, np.minimum(J, nn - 1), np.where(n > 0, np.minimum(n + 1, W), 0))
    if name == "first_half":
        return gather(c, J + 0 * nn, (n + 1) // 2)
    if name == "second_half":
        return gather(c, J + (nn + 1) // 2, n // 2)
    if name == "evens":
        return gather(c, 2 * J + 0 * nn, (n + 1) // 2)
    if name == "mirror":
        return gather(c, np.where(J < nn, J, 2 * nn - 1 - J), np.minimum(2 * n, W))
    if name == "dedupe_runs":
        prev = np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)
        return compact(c, live & ((J == 0) | (c != prev)))
    if name == "unique":
        earlier = (c[:, :, None] == c[:, None, :]) & (J.T < J)[None, :, :]  # [i, k, j]: c_k == c_j, k < j
        return compact(c, live & ~earlier.any(axis=1))
    raise KeyError(name)


def apply_skills(c: np.ndarray, n: np.ndarray, skill_ids: np.ndarray):
    """Apply skill ``skill_ids[i]`` to row i (grouped by skill)."""
    out, out_n = np.zeros_like(c), np.zeros_like(n)
    for sid in np.unique(skill_ids):
        rows = np.flatnonzero(skill_ids == sid)
        out[rows], out_n[rows] = _skill_vec(SKILL_NAMES[sid], c[rows], n[rows])
    return out, out_n


def concat(a, na, b, nb):
    """Row-wise (a + b)[:W]."""
    J, la = _J, na[:, None]
    out = np.where(J < la, a, np.take_along_axis(b, np.clip(J - la, 0, W - 1), axis=1))
    return gather(out, J + 0 * la, np.minimum(na + nb, W))


def interleave(a, na, b, nb):
    """Row-wise character interleaving of a and b, then the longer one's remainder, capped."""
    J, la, lb = _J, na[:, None], nb[:, None]
    m = np.minimum(la, lb)
    from_a = np.where(J < 2 * m, J % 2 == 0, la > lb)
    pos = np.where(J < 2 * m, J // 2, m + (J - 2 * m))
    out = np.where(
        from_a,
        np.take_along_axis(a, np.clip(pos, 0, W - 1), axis=1),
        np.take_along_axis(b, np.clip(pos, 0, W - 1), axis=1),
    )
    return gather(out, J + 0 * la, np.minimum(na + nb, W))


def apply_routing(name: str, ops, skill_ids):
    """Vectorized ``ROUTINGS[name].apply``: ops is a list of (chars, lengths) operand arrays."""
    (a, na), *rest = ops
    if name in ("chain", "reuse_input", "skip"):
        return apply_skills(a, na, skill_ids)
    b, nb = rest[0] if rest else (a, na)
    if name == "concat":
        return apply_skills(*concat(a, na, b, nb), skill_ids)
    if name == "interleave":
        return apply_skills(*interleave(a, na, b, nb), skill_ids)
    if name == "longer":
        pick = (na > nb)[:, None]
        return apply_skills(np.where(pick, a, b), np.where(na > nb, na, nb), skill_ids)
    if name == "shorter":
        pick = (na < nb)[:, None]
        return apply_skills(np.where(pick, a, b), np.where(na < nb, na, nb), skill_ids)
    if name == "if_even":
        s, ns = apply_skills(a, na, skill_ids)
        even = na % 2 == 0
        return np.where(even[:, None], s, a), np.where(even, ns, na)
    if name == "map_halves":
        h = na // 2
        first, nf = gather(a, _J + 0 * h[:, None], h)
        second, ns = gather(a, _J + h[:, None], na - h)
        return concat(*apply_skills(first, nf, skill_ids), *apply_skills(second, ns, skill_ids))
    if name == "twice":
        return apply_skills(*apply_skills(a, na, skill_ids), skill_ids)
    raise KeyError(name)


def execute_batch(x: np.ndarray, xn: np.ndarray, codes: np.ndarray, depth: np.ndarray):
    """Execute compositions row-wise: values (m, L, W) uint8 and their lengths (m, L)."""
    m, L = codes.shape
    hc, hn = [x], [xn]
    nsk = len(SKILL_NAMES)
    for t in range(1, L + 1):
        vc, vn = np.zeros((m, W), dtype=np.uint8), np.zeros(m, dtype=np.int64)
        live = depth >= t
        rid, sid = codes[:, t - 1] // nsk, codes[:, t - 1] % nsk
        for r in np.unique(rid[live]):
            rows = np.flatnonzero(live & (rid == r))
            name = ROUTING_NAMES[r]
            ops = [(hc[i][rows], hn[i][rows]) for i in ROUTINGS[name].operands(t)]
            vc[rows], vn[rows] = apply_routing(name, ops, sid[rows])
        hc.append(vc)
        hn.append(vn)
    return np.stack(hc[1:], axis=1), np.stack(hn[1:], axis=1)


@dataclass
class Batch:
    """n HLSM items as arrays (granularity 1). ``tokens`` renders them as padded token ids."""

    start: int  # index of the first item in its stream
    x: np.ndarray  # (n, W) uint8 input characters
    x_len: np.ndarray  # (n,)
    codes: np.ndarray  # (n, L) step codes: routing index * 24 + skill index
    depth: np.ndarray  # (n,)
    values: np.ndarray  # (n, L, W) uint8: h_1..h_L
    value_len: np.ndarray  # (n, L)
    fmt: str  # trace format

    def __len__(self) -> int:
        return len(self.depth)

    def answers(self) -> list[str]:
        last = self.depth - 1
        rows = np.arange(len(self))
        chars, n = self.values[rows, last], self.value_len[rows, last]
        flat = chars.tobytes().decode("latin-1")
        return [flat[i * W : i * W + k] for i, k in enumerate(n.tolist())]

    def tokens(self, tokenizer):
        """Render to token ids: (ids, prompt_len (n,), length (n,), step_spans (n, L, 2)).

        ``ids`` is (n, T) padded with pad_id (uint8: the vocabulary has < 256 tokens);
        ``step_spans`` gives each step's chunk as token positions in ``ids``, (0, 0) where absent.

        Row i equals ``Tokenizer.encode_item`` of item i (tests check it, item by item).
        """
        segments, n_prompt, step_seg = self._segments(tokenizer)
        ids, offsets, total = _write_segments(segments, tokenizer)
        n, L = self.codes.shape
        live = np.arange(L)[None, :] < self.depth[:, None]
        spans = np.zeros((n, L, 2), dtype=np.int64)
        for t, k in enumerate(step_seg):
            end = offsets[:, k + 1] if self.fmt == "values" else offsets[:, k + 2]  # explicit: modules+value
            spans[:, t, 0], spans[:, t, 1] = offsets[:, k] * live[:, t], end * live[:, t]
        return ids, offsets[:, n_prompt], total, spans

    def _segments(self, tokenizer) -> tuple[list, int, list[int]]:
        """Every row as the same list of segments (content (n, w) token ids, length (n,) used of w):
        <bos> input | modules > trace # answer <eos>; with the number of prompt segments and the
        index of each step's chunk segment."""
        tk = tokenizer.ids
        char_id = np.zeros(256, dtype=np.uint8)
        for ch in "abcdefghijklmnopqrstuvwxyz":
            char_id[ord(ch)] = tk[ch]
        nsk = len(SKILL_NAMES)
        r_tok = np.array([tk[ROUTINGS[r].token] for r in ROUTING_NAMES], dtype=np.uint8)
        s_tok = np.array([tk[SKILLS[s].token] for s in SKILL_NAMES], dtype=np.uint8)
        n, L = self.codes.shape
        live = np.arange(L)[None, :] < self.depth[:, None]
        rt, st = r_tok[self.codes // nsk], s_tok[self.codes % nsk]
        one = np.ones(n, dtype=np.int64)

        def const(tok):
            return np.full((n, 1), tk[tok] if isinstance(tok, str) else tok, dtype=np.uint8)

        segments = [(const(tokenizer.bos_id), one), (char_id[self.x], self.x_len), (const("|"), one)]
        for t in range(L):
            lv = live[:, t].astype(np.int64)
            if t:
                segments.append((const(" "), lv))
            segments.append((np.stack([rt[:, t], st[:, t]], axis=1), 2 * lv))
        segments.append((const(">"), one))
        n_prompt = len(segments)
        step_seg = []
        if self.fmt != "answer":
            for t in range(L):
                lv = live[:, t].astype(np.int64)
                if self.fmt == "explicit":
                    segments.append((np.stack([rt[:, t], st[:, t], const("=")[:, 0]], axis=1), 3 * lv))
                    step_seg.append(len(segments) - 1)
                segments.append((char_id[self.values[:, t]], self.value_len[:, t] * lv))
                if self.fmt == "values":
                    step_seg.append(len(segments) - 1)
                segments.append((const(";"), lv))
        rows = np.arange(n)
        segments.append((const("#"), one))
        segments.append((char_id[self.values[rows, self.depth - 1]], self.value_len[rows, self.depth - 1]))
        segments.append((const(tokenizer.eos_id), one))
        return segments, n_prompt, step_seg


def _write_segments(segments: list, tokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (n, T) pad_id-padded, offsets (n, K + 1) of each segment in its row, total (n,)).

    Writes the segments in order at their offsets, each at full width: a segment's tail past its
    length lands exactly where the next segments start, so they overwrite it.
    """
    lens = np.stack([s_len for _, s_len in segments]).astype(np.int64)  # (K, n)
    n = lens.shape[1]
    offsets = np.concatenate([np.zeros((1, n), dtype=np.int64), np.cumsum(lens, axis=0)]).T
    total = offsets[:, -1]
    width = int(max((offsets[:, k] + c.shape[1]).max() for k, (c, _) in enumerate(segments)))
    ids = np.empty((n, width), dtype=np.uint8 if len(tokenizer) <= 256 else np.int64)
    flat, row_start = ids.reshape(-1), (np.arange(n) * width)[:, None]
    for k, (content, _) in enumerate(segments):
        flat[row_start + offsets[:, k : k + 1] + np.arange(content.shape[1])] = content
    ids[np.arange(width)[None, :] >= total[:, None]] = tokenizer.pad_id
    return ids[:, : int(total.max())], offsets, total
