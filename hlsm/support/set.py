"""``Support``: the set of items (input string, composition) one data stream may contain.

The set is defined by constraints, not by a list: depths, allowed skills and routings, optional
explicit allowlist, exclusions, required modules, and hash-bucket ranges for compositions and for
inputs. This file holds the definition and its validation, membership tests and enumeration; the
draws live in ``sampling.py`` and the disjointness proofs between two supports in ``proofs.py``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, fields, replace

import numpy as np

from hlsm.modules import LETTERS, MAX_LEN, ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS, check_routings, check_skills
from hlsm.rng import N_BUCKETS, composition_bucket, input_bucket
from hlsm.support import sampling
from hlsm.support.composition import Composition, as_composition, code

ENUMERATE_LIMIT = 200_000  # largest product support ``enumerate`` / disjointness proofs will list


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
        # One step per field group. The order is part of the behaviour: it decides which error a
        # support with several bad fields reports, ``require`` is checked against the validated
        # skills and routings, and the explicit list is filtered by every other constraint.
        # The class is frozen, so normalized values go in through object.__setattr__.
        set_ = object.__setattr__
        set_(self, "depths", _normalize_depths(self.depths))
        set_(self, "skills", check_skills(self.skills))
        set_(self, "routings", check_routings(self.routings))
        set_(self, "require", _normalize_require(self.require, self.skills, self.routings))
        set_(self, "exclude", _normalize_compositions(self.exclude))
        set_(self, "_excluded", frozenset(self.exclude))
        for name in ("buckets", "input_buckets"):
            set_(self, name, _normalize_buckets(name, getattr(self, name)))
        set_(self, "input_len", _normalize_input_len(self.input_len))
        _check_alphabet(self.alphabet)
        if self.compositions is not None:
            comps = _normalize_compositions(self.compositions)
            set_(self, "compositions", comps)
            set_(self, "_listed", frozenset(comps))
            set_(self, "_explicit", _explicit_members(self, comps))

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

    # --- draws (sampling.py) ----------------------------------------------------------------

    def draw_compositions(self, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compositions for items ``index`` as (codes (n, max_depth) int64, depth (n,) int64)."""
        return sampling.draw_compositions(self, key, index)

    def draw_inputs(self, key: int, index: np.ndarray) -> list[str]:
        """Input strings for items ``index``: uniform length, uniform characters, hash-filtered."""
        return sampling.draw_inputs(self, key, index)

    def draw_input_arrays(self, key: int, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``draw_inputs`` as (chars (n, max_len) uint8, zero-padded; length (n,))."""
        return sampling.draw_input_arrays(self, key, index)

    def sample_compositions(self, n: int, seed: int = 0) -> list[Composition]:
        """``n`` distinct compositions of the support (fewer if it has fewer), deterministic."""
        return sampling.sample_compositions(self, n, seed)

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


# --- the steps of Support.__post_init__, one per field group --------------------------------


def _normalize_depths(depths) -> tuple[int, ...]:
    """An int or an iterable of ints >= 1, as a sorted tuple without repeats."""
    raw = (depths,) if isinstance(depths, (int, np.integer)) else depths
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
        raise ValueError(f"depths must be an integer >= 1 or a tuple of them, got {depths!r}")
    raw = tuple(raw)
    # bool is an int subclass: depths=True would silently mean depth 1
    if not raw or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in raw):
        raise ValueError(f"depths must be integers >= 1, got {depths!r}")
    return tuple(sorted(set(int(d) for d in raw)))


def _normalize_require(require, skills: tuple[str, ...], routings: tuple[str, ...]) -> tuple[str, ...]:
    """Known module names, at least one of them allowed (else no composition could qualify)."""
    for name in require:
        if name not in SKILLS and name not in ROUTINGS:
            raise ValueError(
                f"unknown module {name!r} in require; allowed: any skill or routing name"
            )
    require = tuple(require)
    if require and not set(require) & set(skills + routings):
        raise ValueError(
            f"contradictory support: require={require!r} but none of them is among the "
            f"allowed skills/routings"
        )
    return require


def _normalize_compositions(comps) -> tuple[Composition, ...]:
    """Validated compositions, sorted and without repeats (for ``exclude`` and ``compositions``)."""
    return tuple(sorted(set(as_composition(c) for c in comps)))


def _normalize_buckets(name: str, r) -> tuple[int, int]:
    """A hash-bucket range [lo, hi) inside [0, N_BUCKETS), not empty."""
    lo, hi = (int(v) for v in r)
    if not 0 <= lo < hi <= N_BUCKETS:
        raise ValueError(f"{name} must satisfy 0 <= lo < hi <= {N_BUCKETS}, got {(lo, hi)!r}")
    return lo, hi


def _normalize_input_len(r) -> tuple[int, int]:
    """An inclusive input length range within what the modules accept."""
    lo, hi = (int(v) for v in r)
    if not 1 <= lo <= hi <= MAX_LEN:
        raise ValueError(f"input_len must satisfy 1 <= lo <= hi <= {MAX_LEN}, got {(lo, hi)!r}")
    return lo, hi


def _check_alphabet(alphabet) -> None:
    """At least two distinct lowercase letters a-z (checked, stored as given)."""
    alpha = str(alphabet)
    if len(set(alpha)) != len(alpha) or not set(alpha) <= set(LETTERS) or len(alpha) < 2:
        raise ValueError(
            f"alphabet must be >= 2 distinct lowercase letters a-z, got {alphabet!r}"
        )


def _explicit_members(support: Support, comps: tuple[Composition, ...]) -> tuple[Composition, ...]:
    """The listed compositions that pass every other constraint; an empty list is an error."""
    kept = tuple(c for c in comps if support.contains(c))
    if not kept:
        raise ValueError(
            f"empty support: none of the {len(comps)} listed compositions satisfies "
            f"depths={support.depths}, the allowed modules, require, exclude and buckets"
        )
    return kept
