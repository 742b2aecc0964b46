"""Supports and splits: which modules, compositions, depths and inputs each data stream holds.

A *composition* is the latent selection cascade of one item, written as a tuple of
``(routing, skill)`` name pairs, one per step. A ``Support`` is the set of items (input string,
composition) a stream may contain. Compositions and inputs are partitioned by a stable hash into
``N_BUCKETS`` buckets, so a split can give SFT, RL and evaluation disjoint bucket ranges of the
same composition space without enumerating it (depth 3 over the full inventory has 240^3 = 13.8M
compositions); small supports can instead list their compositions explicitly.

A ``Split`` names the training supports (``sft``, ``rl``, ...) and evaluation supports (``seen``,
``unseen``, ``deeper``, ...) of one experiment, and ``Split.check_disjoint`` proves that no
evaluation item can occur in training and that no "unseen" evaluation composition does.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from hlsm.modules import (
    LETTERS,
    MAX_LEN,
    ROUTING_NAMES,
    ROUTINGS,
    SKILL_NAMES,
    SKILLS,
    check_routings,
    check_skills,
)
from hlsm.names import (
    ATOMS,
    DEEPER,
    EVAL_ATOMS,
    EVAL_HELDOUT_ATOMS,
    HELDOUT_ATOMS,
    RL,
    RL_ATOMS,
    RL_COMPOSED,
    RL_INSIDE,
    RL_PROMPTS,
    SEEN,
    SFT,
    UNSEEN,
    eval_stream,
    train_stream,
)
from hlsm.rng import (
    N_BUCKETS,
    composition_bucket,
    composition_buckets,
    input_bucket,
    input_buckets,
    uniforms,
)

Composition = tuple[tuple[str, str], ...]

_SKILL_INDEX = {n: i for i, n in enumerate(SKILL_NAMES)}
_ROUTING_INDEX = {n: i for i, n in enumerate(ROUTING_NAMES)}
N_CODES = len(SKILL_NAMES) * len(ROUTING_NAMES)
MAX_ATTEMPTS = 400  # rejection rounds before a support is declared (practically) empty
ENUMERATE_LIMIT = 200_000  # largest product support ``enumerate`` / disjointness proofs will list


def code(routing: str, skill: str) -> int:
    """The integer code of one step: routing index * 24 + skill index (stable across versions)."""
    return _ROUTING_INDEX[routing] * len(SKILL_NAMES) + _SKILL_INDEX[skill]


def decode(c: int) -> tuple[str, str]:
    """Inverse of ``code``."""
    return ROUTING_NAMES[c // len(SKILL_NAMES)], SKILL_NAMES[c % len(SKILL_NAMES)]


def as_composition(comp) -> Composition:
    """Normalize a composition (lists from JSON) into a tuple of (routing, skill), validated."""
    try:
        out = tuple((str(r), str(s)) for r, s in comp)
    except (TypeError, ValueError):
        raise ValueError(f"a composition is a sequence of (routing, skill) pairs, got {comp!r}") from None
    if not out:
        raise ValueError("a composition needs at least one step (depth >= 1), got ()")
    for r, s in out:
        check_routings((r,))
        check_skills((s,))
    return out


@dataclass(frozen=True)
class Support:
    """The set of items (input, composition) one data stream may contain.

    An item is in the support iff its depth is in ``depths``, every step uses an allowed skill and
    routing, the composition is in ``compositions`` (when given), not in ``exclude``, uses at least
    one module named in ``require`` (when given), its composition hash falls in ``buckets`` and its
    input hash in ``input_buckets`` (both under ``partition_seed``), and the input has a length in
    ``input_len`` over ``alphabet``.
    """

    depths: tuple[int, ...] = (3,)  # composition depths L (number of steps)
    skills: tuple[str, ...] = SKILL_NAMES  # allowed skills
    routings: tuple[str, ...] = ROUTING_NAMES  # allowed routing mechanisms
    compositions: tuple[Composition, ...] | None = None  # explicit allowlist; None = all products
    exclude: tuple[Composition, ...] = ()  # forbidden compositions
    require: tuple[str, ...] = ()  # each composition must use one of these skills/routings
    buckets: tuple[int, int] = (0, N_BUCKETS)  # composition hash buckets [lo, hi)
    input_buckets: tuple[int, int] = (0, N_BUCKETS)  # input hash buckets [lo, hi)
    partition_seed: int = 0  # seed of both partition hashes
    input_len: tuple[int, int] = (4, 6)  # input length range, inclusive
    alphabet: str = "abcdef"  # input characters (skills may map values outside it, within a-z)
    _explicit: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _listed: frozenset | None = field(default=None, init=False, repr=False, compare=False)
    _excluded: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        raw = (self.depths,) if isinstance(self.depths, (int, np.integer)) else self.depths
        if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
            raise ValueError(f"depths must be an integer >= 1 or a tuple of them, got {self.depths!r}")
        raw = tuple(raw)
        if not raw or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in raw):
            raise ValueError(f"depths must be integers >= 1, got {self.depths!r}")
        depths = tuple(sorted(set(int(d) for d in raw)))
        set_(self, "depths", depths)
        set_(self, "skills", check_skills(self.skills))
        set_(self, "routings", check_routings(self.routings))
        for name in self.require:
            if name not in SKILLS and name not in ROUTINGS:
                raise ValueError(
                    f"unknown module {name!r} in require; allowed: any skill or routing name"
                )
        set_(self, "require", tuple(self.require))
        if self.require and not set(self.require) & set(self.skills + self.routings):
            raise ValueError(
                f"contradictory support: require={self.require!r} but none of them is among the "
                f"allowed skills/routings"
            )
        set_(self, "exclude", tuple(sorted(set(as_composition(c) for c in self.exclude))))
        set_(self, "_excluded", frozenset(self.exclude))
        for name in ("buckets", "input_buckets"):
            lo, hi = (int(v) for v in getattr(self, name))
            if not 0 <= lo < hi <= N_BUCKETS:
                raise ValueError(f"{name} must satisfy 0 <= lo < hi <= {N_BUCKETS}, got {(lo, hi)!r}")
            set_(self, name, (lo, hi))
        lo, hi = (int(v) for v in self.input_len)
        if not 1 <= lo <= hi <= MAX_LEN:
            raise ValueError(f"input_len must satisfy 1 <= lo <= hi <= {MAX_LEN}, got {(lo, hi)!r}")
        set_(self, "input_len", (lo, hi))
        alpha = str(self.alphabet)
        if len(set(alpha)) != len(alpha) or not set(alpha) <= set(LETTERS) or len(alpha) < 2:
            raise ValueError(
                f"alphabet must be >= 2 distinct lowercase letters a-z, got {self.alphabet!r}"
            )
        if self.compositions is not None:
            comps = tuple(sorted(set(as_composition(c) for c in self.compositions)))
            set_(self, "compositions", comps)
            set_(self, "_listed", frozenset(comps))
            kept = tuple(c for c in comps if self.contains(c))
            if not kept:
                raise ValueError(
                    f"empty support: none of the {len(comps)} listed compositions satisfies "
                    f"depths={depths}, the allowed modules, require, exclude and buckets"
                )
            set_(self, "_explicit", kept)

    # --- membership -------------------------------------------------------------------------

    def contains(self, comp) -> bool:
        """Whether a composition (any input) belongs to the support."""
        comp = tuple((r, s) for r, s in comp)
        if len(comp) not in self.depths:
            return False
        if any(r not in self.routings or s not in self.skills for r, s in comp):
            return False
        if self._listed is not None and comp not in self._listed:
            return False
        if comp in self._excluded:
            return False
        if self.require and not any(r in self.require or s in self.require for r, s in comp):
            return False
        b = composition_bucket(tuple(code(r, s) for r, s in comp), self.partition_seed)
        return self.buckets[0] <= b < self.buckets[1]

    def contains_input(self, x: str) -> bool:
        """Whether an input string belongs to the support."""
        if not self.input_len[0] <= len(x) <= self.input_len[1] or not set(x) <= set(self.alphabet):
            return False
        b = input_bucket(x, self.partition_seed)
        return self.input_buckets[0] <= b < self.input_buckets[1]

    def contains_item(self, x: str, comp) -> bool:
        return self.contains_input(x) and self.contains(comp)

    def enumerate(self, limit: int = ENUMERATE_LIMIT) -> list[Composition]:
        """Every composition of the support, sorted; a ValueError if more than ``limit`` to list."""
        if self._explicit is not None:
            return list(self._explicit)
        n = self.universe_size()
        if n > limit:
            raise ValueError(f"support has up to {n} compositions, more than limit={limit} to list")
        steps = [(r, s) for r in self.routings for s in self.skills]
        out = [
            c
            for d in self.depths
            for c in itertools.product(steps, repeat=d)
            if self.contains(c)
        ]
        return sorted(out)

    def universe_size(self) -> int:
        """Number of compositions before hash, require and exclude filters (an upper bound)."""
        if self._explicit is not None:
            return len(self._explicit)
        k = len(self.skills) * len(self.routings)
        return sum(k**d for d in self.depths)

    def modules(self) -> set[str]:
        """Names of the skills and routings this support's compositions may use."""
        if self._explicit is not None:
            return {m for c in self._explicit for step in c for m in step}
        return set(self.skills) | set(self.routings)

    # --- vectorized sampling ----------------------------------------------------------------

    def draw_compositions(self, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compositions for items ``index`` as (codes (n, max_depth) int64, depth (n,) int64).

        A pure function of (key, index): rejection sampling from the product distribution
        (uniform depth, uniform routing and skill per step) with per-item attempt counters.
        """
        n, max_d = len(index), max(self.depths)
        codes = np.zeros((n, max_d), dtype=np.int64)
        depth = np.zeros(n, dtype=np.int64)
        if self._explicit is not None:
            table, table_depth = self._explicit_arrays()
            u = uniforms(key, 1, index, 0, 1)[:, 0]
            j = np.minimum((u * len(table)).astype(np.int64), len(table) - 1)
            return table[j], table_depth[j]
        r_ids = np.array([_ROUTING_INDEX[r] for r in self.routings])
        s_ids = np.array([_SKILL_INDEX[s] for s in self.skills])
        depths = np.array(self.depths)
        todo = np.arange(n)
        for attempt in range(MAX_ATTEMPTS):
            u = uniforms(key, 1, index[todo], attempt, 1 + 2 * max_d)
            d = depths[np.minimum((u[:, 0] * len(depths)).astype(np.int64), len(depths) - 1)]
            ri = np.minimum((u[:, 1::2] * len(r_ids)).astype(np.int64), len(r_ids) - 1)
            si = np.minimum((u[:, 2::2] * len(s_ids)).astype(np.int64), len(s_ids) - 1)
            c = r_ids[ri] * len(SKILL_NAMES) + s_ids[si]
            c[np.arange(max_d)[None, :] >= d[:, None]] = 0
            ok = self._accept(c, d)
            codes[todo[ok]], depth[todo[ok]] = c[ok], d[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                return codes, depth
        raise ValueError(
            f"support looks empty: after {MAX_ATTEMPTS} rejection rounds {len(todo)} items found no "
            f"composition satisfying {self.describe()}"
        )

    def _explicit_arrays(self):
        max_d = max(self.depths)
        table = np.zeros((len(self._explicit), max_d), dtype=np.int64)
        for i, comp in enumerate(self._explicit):
            table[i, : len(comp)] = [code(r, s) for r, s in comp]
        return table, np.array([len(c) for c in self._explicit], dtype=np.int64)

    def _accept(self, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        ok = np.ones(len(d), dtype=bool)
        if self.buckets != (0, N_BUCKETS):
            b = composition_buckets(c, d, self.partition_seed)
            ok &= (b >= self.buckets[0]) & (b < self.buckets[1])
        if self.require:
            needed = np.zeros(N_CODES, dtype=bool)
            for k in range(N_CODES):
                r, s = decode(k)
                needed[k] = r in self.require or s in self.require
            live = np.arange(c.shape[1])[None, :] < d[:, None]
            ok &= (needed[c] & live).any(axis=1)
        if self.exclude:
            banned = {tuple(code(r, s) for r, s in comp) for comp in self.exclude}
            for i in np.flatnonzero(ok):
                if tuple(c[i, : d[i]].tolist()) in banned:
                    ok[i] = False
        return ok

    def draw_inputs(self, key: int, index: np.ndarray) -> list[str]:
        """Input strings for items ``index``: uniform length, uniform characters, hash-filtered."""
        chars, length = self.draw_input_arrays(key, index)
        w = chars.shape[1]
        flat = chars.tobytes().decode("latin-1")
        return [flat[i * w : i * w + k] for i, k in enumerate(length.tolist())]

    def draw_input_arrays(self, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``draw_inputs`` as (chars (n, max_len) uint8, zero-padded; length (n,))."""
        n, lo, hi = len(index), self.input_len[0], self.input_len[1]
        alpha = np.frombuffer(self.alphabet.encode(), dtype=np.uint8)
        chars = np.zeros((n, hi), dtype=np.uint8)
        length = np.zeros(n, dtype=np.int64)
        todo = np.arange(n)
        for attempt in range(MAX_ATTEMPTS):
            u = uniforms(key, 0, index[todo], attempt, 1 + hi)
            ln = lo + np.minimum((u[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
            ch = alpha[np.minimum((u[:, 1:] * len(alpha)).astype(np.int64), len(alpha) - 1)]
            ch[np.arange(hi)[None, :] >= ln[:, None]] = 0
            ok = np.ones(len(todo), dtype=bool)
            if self.input_buckets != (0, N_BUCKETS):
                b = input_buckets(ch, ln, self.partition_seed)
                ok = (b >= self.input_buckets[0]) & (b < self.input_buckets[1])
            chars[todo[ok]], length[todo[ok]] = ch[ok], ln[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise ValueError(f"input space looks empty under {self.describe()}")
        return chars, length

    def sample_compositions(self, n: int, seed: int = 0) -> list[Composition]:
        """``n`` distinct compositions of the support (fewer if it has fewer), deterministic."""
        from hlsm.rng import stream_key

        key, out, seen, start, stale = stream_key("compositions", seed), [], set(), 0, 0
        while len(out) < n and start < 50 * n + 10_000 and stale < 3:
            idx = np.arange(start, start + 4 * n + 64)
            codes, depth = self.draw_compositions(key, idx)
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

    def restrict(self, n: int, seed: int = 0) -> Support:
        """The same support cut down to ``n`` explicitly listed compositions."""
        return replace(self, compositions=tuple(self.sample_compositions(n, seed)))

    # --- description and JSON ---------------------------------------------------------------

    def describe(self) -> str:
        parts = [f"depths={self.depths}"]
        if self.skills != SKILL_NAMES:
            parts.append(f"skills={self.skills}")
        if self.routings != ROUTING_NAMES:
            parts.append(f"routings={self.routings}")
        if self.compositions is not None:
            parts.append(f"{len(self.compositions)} listed compositions")
        for name in ("exclude", "require"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"buckets={self.buckets} input_buckets={self.input_buckets}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        d = json.loads(json.dumps(d))  # tuples -> lists
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Support:
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Support fields {sorted(unknown)}; allowed: {sorted(known)}")
        d = dict(d)
        if d.get("compositions") and "depths" not in d:
            # a list of compositions alone means exactly those: take their depths, not the default
            d["depths"] = sorted({len(c) for c in d["compositions"]})
        for k in ("depths", "skills", "routings", "require", "buckets", "input_buckets", "input_len"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# --- disjointness proofs --------------------------------------------------------------------


def compositions_disjoint(a: Support, b: Support) -> tuple[bool, str]:
    """Prove that no composition lies in both supports: (True, reason) or (False, why not)."""
    if not set(a.depths) & set(b.depths):
        return True, f"depths {a.depths} and {b.depths} do not overlap"
    if a.partition_seed == b.partition_seed and (
        a.buckets[1] <= b.buckets[0] or b.buckets[1] <= a.buckets[0]
    ):
        return True, f"composition buckets {a.buckets} and {b.buckets} do not overlap"
    for x, y in ((a, b), (b, a)):
        if x.require and not set(x.require) & y.modules():
            return True, f"one side requires one of {x.require}, which the other never uses"
    if not set(a.skills) & set(b.skills):
        return True, "no skill in common"
    if not set(a.routings) & set(b.routings):
        return True, "no routing in common"
    for x, y in ((a, b), (b, a)):
        if x._explicit is not None:
            shared = [c for c in x._explicit if y.contains(c)]
            if shared:
                return False, f"{len(shared)} shared compositions, e.g. {shared[0]}"
            return True, f"checked all {len(x._explicit)} listed compositions"
    for x, y in sorted(((a, b), (b, a)), key=lambda p: p[0].universe_size()):
        if x.universe_size() <= ENUMERATE_LIMIT:
            shared = [c for c in x.enumerate() if y.contains(c)]
            if shared:
                return False, f"{len(shared)} shared compositions, e.g. {shared[0]}"
            return True, "checked all compositions of the smaller support by enumeration"
    return False, "could not prove disjointness (give disjoint buckets, depths or explicit lists)"


def inputs_disjoint(a: Support, b: Support) -> tuple[bool, str]:
    """Prove that no input string lies in both supports."""
    if a.input_len[1] < b.input_len[0] or b.input_len[1] < a.input_len[0]:
        return True, f"input lengths {a.input_len} and {b.input_len} do not overlap"
    if not set(a.alphabet) & set(b.alphabet):
        return True, "alphabets do not overlap"
    if a.partition_seed == b.partition_seed and (
        a.input_buckets[1] <= b.input_buckets[0] or b.input_buckets[1] <= a.input_buckets[0]
    ):
        return True, f"input buckets {a.input_buckets} and {b.input_buckets} do not overlap"
    return False, "inputs may overlap"


def items_disjoint(a: Support, b: Support) -> tuple[bool, str]:
    """Prove that no (input, composition) item lies in both supports."""
    ok, why = compositions_disjoint(a, b)
    if ok:
        return True, "compositions: " + why
    ok2, why2 = inputs_disjoint(a, b)
    if ok2:
        return True, "inputs: " + why2
    return False, f"compositions: {why}; inputs: {why2}"


def is_inside(inner: Support, outer: Support) -> bool:
    """Whether every composition of ``inner`` provably lies in ``outer`` (conservative)."""
    if inner._explicit is not None:
        return all(outer.contains(c) for c in inner._explicit)
    if outer.compositions is not None or outer.exclude or outer.require:
        if inner.universe_size() > ENUMERATE_LIMIT:
            return False
        return all(outer.contains(c) for c in inner.enumerate())
    return (
        set(inner.depths) <= set(outer.depths)
        and set(inner.skills) <= set(outer.skills)
        and set(inner.routings) <= set(outer.routings)
        and (inner.partition_seed == outer.partition_seed or outer.buckets == (0, N_BUCKETS))
        and outer.buckets[0] <= inner.buckets[0]
        and inner.buckets[1] <= outer.buckets[1]
    )


class LeakageError(ValueError):
    """An evaluation support may share items (or, for unseen evals, compositions) with training."""


@dataclass(frozen=True)
class Split:
    """One experiment's data design: named training and evaluation supports.

    ``unseen`` lists the evaluation supports whose compositions must be absent from every
    training support; every other evaluation support only needs item-level disjointness.
    """

    name: str
    train: dict[str, Support]
    eval: dict[str, Support]
    unseen: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self):
        if not self.train or not self.eval:
            raise ValueError(f"split {self.name!r} needs at least one train and one eval support")
        both = sorted(set(self.train) & set(self.eval))
        if both:  # one name, two supports: an evaluator asking for it could be handed training data
            raise ValueError(
                f"split {self.name!r}: {both} name both a training and an evaluation support; "
                f"every support name must be unique (e.g. eval {both[0]!r} -> 'eval_{both[0]}')"
            )
        for n in self.unseen:
            if n not in self.eval:
                raise ValueError(f"unseen={n!r} is not an eval support; have {sorted(self.eval)}")
        object.__setattr__(self, "unseen", tuple(self.unseen))

    def support(self, name: str) -> Support:
        """The support named ``name`` (names are unique across ``train`` and ``eval``)."""
        if name in self.train:
            return self.train[name]
        if name in self.eval:
            return self.eval[name]
        raise ValueError(
            f"split {self.name!r} has no support {name!r}; have {sorted(self.train) + sorted(self.eval)}"
        )

    def stream(self, name: str) -> str:
        """The stream support ``name`` is drawn from: a trainer's for a training support, else eval's."""
        self.support(name)
        return train_stream(name) if name in self.train else eval_stream(name)

    def check_disjoint(self) -> list[str]:
        """Prove no eval item can occur in training; raise LeakageError naming the pair otherwise.

        Returns the proof, one line per (train, eval) pair.
        """
        lines = []
        for e_name, e in self.eval.items():
            for t_name, t in self.train.items():
                if e_name in self.unseen:
                    ok, why = compositions_disjoint(t, e)
                    kind = "compositions"
                else:
                    ok, why = items_disjoint(t, e)
                    kind = "items"
                if not ok:
                    raise LeakageError(
                        f"split {self.name!r}: eval {e_name!r} and train {t_name!r} may share {kind}: {why}"
                    )
                lines.append(f"eval {e_name} vs train {t_name}: {kind} disjoint ({why})")
        return lines

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "unseen": list(self.unseen),
            "train": {k: v.to_dict() for k, v in self.train.items()},
            "eval": {k: v.to_dict() for k, v in self.eval.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            unseen=tuple(d.get("unseen", ())),
            train={k: Support.from_dict(v) for k, v in d["train"].items()},
            eval={k: Support.from_dict(v) for k, v in d["eval"].items()},
        )

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> Split:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- the splits the paper varies ------------------------------------------------------------


def _check_ranges(**ranges: tuple[int, int]) -> None:
    """Composition bucket ranges [lo, hi) that a split keeps apart: valid and pairwise disjoint."""
    for name, r in ranges.items():
        try:
            lo, hi = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a bucket range (lo, hi), got {r!r}") from None
        if not 0 <= lo < hi <= N_BUCKETS:
            raise ValueError(f"{name} must satisfy 0 <= lo < hi <= {N_BUCKETS}, got {tuple(r)!r}")
    items = list(ranges.items())
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1 :]:
            if ra[0] < rb[1] and rb[0] < ra[1]:
                raise ValueError(
                    f"bucket ranges {a}={tuple(ra)!r} and {b}={tuple(rb)!r} overlap; they must be "
                    f"disjoint (their compositions would be shared)"
                )

TRAIN_INPUTS = (0, 800)  # input hash buckets used by training streams
EVAL_INPUTS = (800, N_BUCKETS)  # ... and by evaluation streams: no eval item repeats a train item


def compositional_split(
    depth: int = 3,
    sft: tuple[int, int] = (0, 500),
    rl: tuple[int, int] = (500, 750),
    heldout: tuple[int, int] = (750, N_BUCKETS),
    deeper: tuple[int, ...] = (4, 5, 6),
    skills: tuple[str, ...] = SKILL_NAMES,
    routings: tuple[str, ...] = ROUTING_NAMES,
    partition_seed: int = 0,
    input_len: tuple[int, int] = (4, 6),
    alphabet: str = "abcdef",
    sft_depths: tuple[int, ...] = (),
) -> Split:
    """Seen vs unseen compositions at L = depth, RL inside vs beyond SFT, atoms vs compounds.

    Composition buckets at ``depth`` are cut into SFT (seen), RL (unseen by SFT) and held-out
    (unseen by both) ranges. Training supports: ``sft`` (compounds at ``depth``), ``atoms`` (every
    module at L = 1), ``rl`` (compounds beyond the SFT support), ``rl_inside`` (RL on the SFT
    compositions), ``rl_atoms`` (RL on atoms only). Evaluation supports: ``seen`` (SFT
    compositions, fresh inputs), ``rl_prompts`` (RL compositions, fresh inputs), ``unseen``
    (held-out compositions), ``deeper`` (depths > ``depth``), ``eval_atoms`` (L = 1, fresh inputs).
    The three composition ranges must be disjoint (RL is "beyond the SFT support"). ``sft_depths``
    (default: ``(depth,)``) lets SFT also show shallower compounds of its bucket range, e.g.
    (1, 2, 3); RL, ``seen`` and ``unseen`` stay at L = depth.
    """
    if deeper and min(deeper) <= depth:
        raise ValueError(f"deeper depths must exceed depth={depth}, got {deeper!r}")
    _check_ranges(sft=sft, rl=rl, heldout=heldout)
    sft_depths = tuple(sft_depths) or (depth,)
    if depth not in sft_depths or any(not 1 <= d <= depth for d in sft_depths):
        raise ValueError(f"sft_depths must include depth={depth} and lie in 1..{depth}, got {sft_depths!r}")
    common = dict(
        skills=tuple(skills),
        routings=tuple(routings),
        partition_seed=partition_seed,
        input_len=tuple(input_len),
        alphabet=alphabet,
    )
    train_in = dict(common, input_buckets=TRAIN_INPUTS)
    eval_in = dict(common, input_buckets=EVAL_INPUTS)
    train = {
        SFT: Support(depths=sft_depths, buckets=sft, **train_in),
        ATOMS: Support(depths=(1,), **train_in),
        RL: Support(depths=(depth,), buckets=rl, **train_in),
        RL_INSIDE: Support(depths=(depth,), buckets=sft, **train_in),
        RL_ATOMS: Support(depths=(1,), **train_in),
    }
    evals = {
        SEEN: Support(depths=(depth,), buckets=sft, **eval_in),
        RL_PROMPTS: Support(depths=(depth,), buckets=rl, **eval_in),
        UNSEEN: Support(depths=(depth,), buckets=heldout, **eval_in),
        EVAL_ATOMS: Support(depths=(1,), **eval_in),
    }
    if deeper:
        evals[DEEPER] = Support(depths=tuple(deeper), **eval_in)
    return Split(
        name=f"compositional-L{depth}-p{partition_seed}",
        train=train,
        eval=evals,
        unseen=(UNSEEN,),
        description=compositional_split.__doc__.split("\n")[0],
    )


def heldout_split(
    heldout: tuple[str, ...],
    depth: int = 3,
    rl: tuple[int, int] = (0, 500),
    test: tuple[int, int] = (500, N_BUCKETS),
    skills: tuple[str, ...] = SKILL_NAMES,
    routings: tuple[str, ...] = ROUTING_NAMES,
    partition_seed: int = 0,
    input_len: tuple[int, int] = (4, 6),
    alphabet: str = "abcdef",
) -> Split:
    """Skills or routings held out of SFT, then reintroduced in RL as atoms or in compositions.

    ``heldout`` names skills or routings (not both) from the inventory ``skills`` x ``routings``.
    The SFT compositions (``sft``, at ``depth``) and ``atoms`` never use them. RL reintroduces them
    either as atoms (``rl_atoms``: L = 1 items using a held-out module) or inside compositions
    (``rl_composed``: compounds using one, from the ``rl`` bucket range). ``heldout_atoms`` is the
    same set as ``rl_atoms``, named for use as SFT data: a from-scratch policy that never saw a
    module cannot be rewarded for it (p0 = 0), so fig2/fig3 let SFT teach the module in isolation
    and ask whether RL makes it composable. Evaluation: ``unseen`` compounds using a held-out
    module from the ``test`` bucket range (never in any training support), ``rl_prompts`` (the
    ``rl_composed`` compositions on fresh inputs), ``eval_heldout_atoms`` (fresh inputs) and ``seen``
    SFT compounds on fresh inputs (forgetting).
    """
    if isinstance(heldout, str):  # a bare name would be split into its characters
        raise ValueError(f"heldout must be a tuple of module names, got the string {heldout!r}; "
                         f"write ({heldout!r},)")
    heldout = tuple(heldout)
    _check_ranges(rl=rl, test=test)
    skills, routings = check_skills(skills), check_routings(routings)
    is_skill = [h in SKILLS for h in heldout]
    if not heldout or not (all(is_skill) or not any(is_skill)):
        raise ValueError(f"heldout must name skills only or routings only, got {heldout!r}")
    if not all(is_skill):
        check_routings(heldout)
    inventory = skills if all(is_skill) else routings
    missing = [h for h in heldout if h not in inventory]
    if missing:
        raise ValueError(f"heldout {missing!r} not in the inventory {inventory!r}")
    kept_skills = tuple(s for s in skills if s not in heldout)
    kept_routings = tuple(r for r in routings if r not in heldout)
    if not kept_skills or not kept_routings:
        raise ValueError(f"heldout {heldout!r} leaves no module of its kind for SFT")
    common = dict(partition_seed=partition_seed, input_len=tuple(input_len), alphabet=alphabet)
    train_in = dict(common, input_buckets=TRAIN_INPUTS)
    eval_in = dict(common, input_buckets=EVAL_INPUTS)
    kept = dict(skills=kept_skills, routings=kept_routings)
    full = dict(skills=skills, routings=routings, require=heldout)
    train = {
        SFT: Support(depths=(depth,), **kept, **train_in),
        ATOMS: Support(depths=(1,), **kept, **train_in),
        HELDOUT_ATOMS: Support(depths=(1,), **full, **train_in),
        RL_ATOMS: Support(depths=(1,), **full, **train_in),
        RL_COMPOSED: Support(depths=(depth,), buckets=rl, **full, **train_in),
    }
    evals = {
        UNSEEN: Support(depths=(depth,), buckets=test, **full, **eval_in),
        RL_PROMPTS: Support(depths=(depth,), buckets=rl, **full, **eval_in),
        EVAL_HELDOUT_ATOMS: Support(depths=(1,), **full, **eval_in),
        SEEN: Support(depths=(depth,), **kept, **eval_in),
    }
    return Split(
        name=f"heldout-{'-'.join(heldout)}-L{depth}-p{partition_seed}",
        train=train,
        eval=evals,
        unseen=(UNSEEN,),
        description=heldout_split.__doc__.split("\n")[0],
    )


SPLIT_FACTORIES = {"compositional": compositional_split, "heldout": heldout_split}

# The prototype task (docs/design.md §prototype), the default split spec of SFTConfig: 8
# length-preserving skills, chain routing, depth-2 compositions split into SFT / RL / held-out
# buckets, depth 3 as the deeper evaluation.
DEFAULT_SPLIT = {
    "factory": "compositional",
    "depth": 2,
    "skills": ["reverse", "rotate_left", "rotate_right", "swap_pairs", "swap_halves", "shift_up",
               "shift_down", "atbash"],
    "routings": ["chain"],
    "deeper": [3],
}


def make_split(spec, field: str = "split") -> Split:
    """A Split from a Split, a ``Split.to_dict()`` dict, or ``{"factory": name, **kwargs}``.

    ``field`` names the config field in error messages (e.g. "SFTConfig.split").
    """
    if isinstance(spec, Split):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(f"{field} must be a Split or a dict, got {type(spec).__name__}")
    if "train" in spec:
        return Split.from_dict(spec)
    factory = spec.get("factory")
    if factory not in SPLIT_FACTORIES:
        raise ValueError(f"{field}: unknown factory {factory!r}; allowed: {', '.join(SPLIT_FACTORIES)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "factory"}
    try:
        return SPLIT_FACTORIES[factory](**kwargs)
    except TypeError as e:
        raise ValueError(f"{field}: bad arguments for {factory}: {e}") from None
