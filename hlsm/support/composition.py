"""Compositions and their integer step codes.

A composition is the latent selection cascade of one item: a tuple of ``(routing, skill)`` name
pairs, one per step. Samplers and hashes work on integer step codes instead of names; the code of
a step is fixed by the module inventory order, so buckets and draws are stable across versions.
"""

from __future__ import annotations

from hlsm.modules import ROUTING_NAMES, SKILL_NAMES, check_routings, check_skills

Composition = tuple[tuple[str, str], ...]

_SKILL_INDEX = {n: i for i, n in enumerate(SKILL_NAMES)}
_ROUTING_INDEX = {n: i for i, n in enumerate(ROUTING_NAMES)}
N_CODES = len(SKILL_NAMES) * len(ROUTING_NAMES)


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
