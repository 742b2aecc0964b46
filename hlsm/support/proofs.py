"""Disjointness and inclusion proofs between two supports.

Each proof is conservative: ``(True, reason)`` only when no shared composition / input / item can
exist, ``(False, why not)`` when one may. Cheap structural arguments come first (depths, bucket
ranges under one partition seed, modules, lengths, alphabets); listing compositions is the last
resort and is only tried for explicit lists or supports up to ``ENUMERATE_LIMIT`` compositions.
"""

from __future__ import annotations

from hlsm.rng import N_BUCKETS
from hlsm.support.set import ENUMERATE_LIMIT, Support


class LeakageError(ValueError):
    """An evaluation support may share items (or, for unseen evals, compositions) with training."""


def compositions_disjoint(a: Support, b: Support) -> tuple[bool, str]:
    """Prove that no composition lies in both supports: (True, reason) or (False, why not)."""
    if not set(a.depths) & set(b.depths):
        return True, f"depths {a.depths} and {b.depths} do not overlap"
    # bucket ranges only separate supports hashed with the same partition seed
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
        # these filters have no structural inclusion test: list inner when it is small enough
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
