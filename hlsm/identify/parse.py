"""What a composition is made of (units, interfaces), and supports read from lists, Supports, JSON.

A *unit* is what the algebra assigns an effect to: a module, or ``module@t`` with positional
units. An *interface* is a data edge of the selection DAG, keyed by the modules on either side
(``INTERFACES``; the package docstring defines the three keys).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES
from hlsm.support import Composition, Split, Support, as_composition

KINDS = ("routing", "skill")
NAMES = {"routing": ROUTING_NAMES, "skill": SKILL_NAMES}
INTERFACES = ("module", "skill-skill", "skill-routing")
INTERFACE_DOC = {
    "module": "(producer-step module, consumer-step module)",
    "skill-skill": "(producer skill, consumer skill)",
    "skill-routing": "(producer skill, consumer routing)",
}
ENUMERATE = 10_000  # product supports with at most this many candidates are enumerated, not sampled


def unit_name(module: str, t: int | None) -> str:
    """A unit is a module (tied) or a (module, position) pair, written ``module@t``."""
    return module if t is None else f"{module}@{t}"


def units_of(comp: Composition, positional: bool = False) -> dict[str, Counter]:
    """The units a composition uses, per kind, with multiplicities."""
    out = {kind: Counter() for kind in KINDS}
    for t, (r, s) in enumerate(comp, 1):
        pos = t if positional else None
        out["routing"][unit_name(r, pos)] += 1
        out["skill"][unit_name(s, pos)] += 1
    return out


def interfaces_of(comp: Composition, interface: str = "module") -> set[tuple[str, str]]:
    """The interface keys a composition exposes: (producer, consumer) along each DAG data edge."""
    out = set()
    for t, (r, s) in enumerate(comp, 1):
        for i in set(ROUTINGS[r].operands(t)):
            if i >= 1:
                r_i, s_i = comp[i - 1]
                if interface == "module":
                    out.update(((r_i, r), (r_i, s), (s_i, r), (s_i, s)))
                else:
                    out.add((s_i, s if interface == "skill-skill" else r))
    return out


def show(comp: Composition) -> str:
    """A composition on one line: ``chain:reverse > skip:sort_asc``."""
    return " > ".join(f"{r}:{s}" for r, s in comp)


def parse_composition(text: str) -> Composition:
    """A composition from one line: ``show``'s ``chain:reverse > skip:sort_asc``, or the CSV-safe
    ``chain.reverse+skip.sort_asc`` of ``hlsm.evaluate.composition_name`` (ValueError naming it)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a composition such as 'chain:reverse > skip:sort_asc', got {text!r}")
    sep, pair = (">", ":") if ":" in text else ("+", ".")
    steps = [step.strip().split(pair) for step in text.split(sep)]
    if any(len(step) != 2 for step in steps):
        raise ValueError(f"cannot read composition {text!r}: write 'routing:skill > routing:skill' "
                         f"or 'routing.skill+routing.skill'")
    try:
        return as_composition(steps)
    except ValueError as e:
        raise ValueError(f"composition {text!r}: {e}") from None


def compositions_of(source, n: int = 3000, seed: int = 0) -> list[Composition]:
    """Compositions of a support given as a list, a ``Support``, or its dict.

    Explicit supports are listed in full. Product-form supports with at most ``ENUMERATE``
    candidate compositions are enumerated, and cut to ``n`` drawn uniformly (seeded) if more
    remain; larger ones give ``n`` distinct compositions from ``sample_compositions(n, seed)``.
    """
    if isinstance(source, Split):
        raise ValueError(f"split {source.name!r} holds several supports; name them (--train, --target)")
    if isinstance(source, dict):
        source = Support.from_dict(source)
    if isinstance(source, Support):
        if source.compositions is not None:
            comps = source.enumerate()
        elif source.universe_size() <= max(n, ENUMERATE):
            comps = source.enumerate()
            if len(comps) > n:
                keep = np.random.default_rng(seed).choice(len(comps), n, replace=False)
                comps = [comps[i] for i in sorted(keep)]
        else:
            comps = source.sample_compositions(n, seed)
    else:
        comps = [_as_composition(c) for c in source]
    comps = list(dict.fromkeys(comps))
    if not comps:
        raise ValueError(f"empty support: no compositions in {source!r}")
    return comps


_STEPS = frozenset((r, s) for r in ROUTING_NAMES for s in SKILL_NAMES)


def _as_composition(comp) -> Composition:
    """``as_composition`` with a fast path for well-formed input (its errors otherwise)."""
    if isinstance(comp, tuple) and comp and all(type(step) is tuple and step in _STEPS for step in comp):
        return comp
    return as_composition(comp)


def union(*sources, n: int = 3000, seed: int = 0) -> list[Composition]:
    """The union of several supports' compositions (each materialized by ``compositions_of``)."""
    return list(dict.fromkeys(c for s in sources for c in compositions_of(s, n, seed)))


def load(path) -> list[Composition] | Support | Split:
    """Read a JSON file holding a list of compositions, a Support dict, or a Split dict."""
    d = json.loads(Path(path).read_text())
    if isinstance(d, dict) and set(d) == {"compositions"}:
        d = d["compositions"]
    if isinstance(d, list):
        return compositions_of(d)
    if isinstance(d, dict) and "train" in d and "eval" in d:
        return Split.from_dict(d)
    if isinstance(d, dict):
        return Support.from_dict(d)
    raise ValueError(f"{path}: expected a list of compositions, a Support dict or a Split dict, got {d!r}")
