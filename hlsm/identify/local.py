"""The local criterion (the paper's Theorem 3.4): local interfaces, their witnesses in a support.

    lw = local_support(sft)                       # the witness index of a support + its identification
    lw.reach(comp)                                # LocalReachability: per step the interface, its witnesses
    local_reach(sft, targets)                     # the same for many targets

The RL-enrichment check built on it (p0, the band, ``enrichment``) is in ``rl_enrichment.py``; its
names are still importable from here.

Local interfaces. Step t of ``c = ((r_1, s_1), ..., (r_L, s_L))`` reads ``O_t =
ROUTINGS[r_t].operands(t)`` (indices into ``h_0 .. h_{t-1}``, in order, repeats kept). Its *local
interface* is ``I_t(c) = ((r_t, s_t), (m_i for i in O_t))`` with ``m_i = (r_i, s_i)`` for ``i >= 1``
and ``m_0 = INPUT``: the parent selection and the ordered selections of the children whose values it
reads. A *local witness* of ``I_t(c)`` in a support S is a pair (c' in S, t') with
``I_t'(c') == I_t(c)``; tied (default) lets t' differ from t, positional requires t' == t.

Local criterion. c is *locally reachable* from S iff c is in S, or every ``I_t(c)`` (t = 1..L) has
a local witness in S and every unit of c is identified by the algebraic criterion (``identify``,
with the same ``positional``). The *score* is the fraction of steps whose interface has a witness;
``min_witnesses`` the fewest compositions witnessing one of them (0 when one has none). A local
witness of ``I_t`` covers every ``module`` interface key of step t (``interfaces_of``), so this
criterion is *stronger* than the graph one: it never calls reachable a composition the graph
criterion calls unreachable for a missing interface.

A product-form support is materialized as a sample (``compositions_of``), so "no witness" can be a
sampling artifact (pass explicit supports or a larger ``n``).
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field

from hlsm.identify.parse import compositions_of, show, units_of
from hlsm.identify.results import Identification, identify
from hlsm.modules import ROUTINGS
from hlsm.support import Composition, as_composition

INPUT = "INPUT"  # the child m_0: the step reads the input h_0
Step = tuple[str, str]
Interface = tuple[Step, tuple]  # ((r_t, s_t), (m_i for i in O_t)), m_i a Step or INPUT


# --- local interfaces and witnesses -----------------------------------------------------------


def local_interface(comp: Composition, t: int) -> Interface:
    """``I_t(c)``: the selection of step t and the ordered selections of the steps it reads."""
    if not 1 <= t <= len(comp):
        raise ValueError(f"step t={t} is outside 1..{len(comp)} of [{show(comp)}]")
    r, s = comp[t - 1]
    return (r, s), tuple(INPUT if i == 0 else comp[i - 1] for i in ROUTINGS[r].operands(t))


def local_interfaces(comp: Composition) -> tuple[Interface, ...]:
    """``(I_1(c), ..., I_L(c))``."""
    return tuple(local_interface(comp, t) for t in range(1, len(comp) + 1))


def show_interface(iface: Interface) -> str:
    """An interface on one line, as an application: ``concat:sort_asc(INPUT, chain:reverse)``."""
    (r, s), kids = iface
    return f"{r}:{s}(" + ", ".join(k if k == INPUT else f"{k[0]}:{k[1]}" for k in kids) + ")"


@dataclass(frozen=True)
class Witnesses:
    """Where a support shows each local interface: per step, and at any step."""

    n_compositions: int
    any_step: dict  # interface -> compositions showing it at some step
    by_step: dict  # interface -> {t: compositions showing it at step t}
    examples: dict = field(repr=False)  # (interface, t) -> the first composition showing it at t
    compositions: frozenset = field(repr=False, metadata={"json": False})

    def count(self, iface: Interface, t: int | None = None) -> int:
        """Compositions witnessing ``iface`` (at step ``t`` when given: positional)."""
        return self.any_step.get(iface, 0) if t is None else self.by_step.get(iface, {}).get(t, 0)

    def steps(self, iface: Interface) -> tuple[int, ...]:
        """The steps at which the support shows ``iface``."""
        return tuple(sorted(self.by_step.get(iface, {})))

    def example(self, iface: Interface, t: int | None = None) -> tuple[Composition, int] | None:
        """One witness ``(c', t')``: at step ``t`` when given, else at the first step showing it."""
        steps = self.steps(iface) if t is None else (t,) * bool(self.count(iface, t))
        return (self.examples[iface, steps[0]], steps[0]) if steps else None


def witnesses(support, *, n: int = 3000, seed: int = 0) -> Witnesses:
    """The local-witness index of a support (a list of compositions, a Support or its dict)."""
    comps = compositions_of(support, n, seed)
    any_step, by_step, examples = Counter(), {}, {}
    for c in comps:
        ifaces = local_interfaces(c)
        for t, iface in enumerate(ifaces, 1):  # (iface, t) occurs at most once per composition
            at = by_step.setdefault(iface, Counter())
            at[t] += 1
            examples.setdefault((iface, t), c)
        any_step.update(set(ifaces))
    return Witnesses(len(comps), dict(any_step), {k: dict(v) for k, v in by_step.items()}, examples,
                     frozenset(comps))


# --- the local criterion ----------------------------------------------------------------------


@dataclass(frozen=True)
class InterfaceWitness:
    """One step's local interface and its witnesses in the support."""

    step: int  # t
    interface: Interface  # I_t(c)
    witnesses: int  # compositions of the support witnessing it (at step t when positional)
    example: Composition | None  # one of them
    example_step: int | None  # ... and the step t' at which it shows it
    steps: tuple[int, ...]  # every step at which the support shows it (positional: must contain t)


@dataclass(frozen=True)
class LocalReachability:
    """Whether one composition is locally reachable (Theorem 3.4), with the failing interfaces."""

    composition: Composition
    reachable: bool  # seen, or (every interface witnessed and every unit identified)
    seen: bool  # the composition itself is in the support
    positional: bool  # witnesses at the same step, positional units
    interfaces: tuple[InterfaceWitness, ...]  # one per step t = 1..L
    missing: tuple[tuple[int, Interface], ...]  # (t, I_t) without a witness
    unidentified: tuple[str, ...]  # units the support does not identify
    score: float  # fraction of steps whose interface has a witness
    min_witnesses: int  # fewest witnessing compositions over the steps (0: one has none)
    why: str  # one line for people


def _witness(w: Witnesses, comp: Composition, t: int, positional: bool) -> InterfaceWitness:
    iface = local_interface(comp, t)
    pos = t if positional else None
    ex = w.example(iface, pos)
    return InterfaceWitness(t, iface, w.count(iface, pos), *(ex or (None, None)), w.steps(iface))


def _missing_text(iw: InterfaceWitness, positional: bool) -> str:
    elsewhere = f" (shown at step {', '.join(map(str, iw.steps))} only)" if positional and iw.steps else ""
    return f"step {iw.step} {show_interface(iw.interface)}{elsewhere}"


def _local_why(seen, ok, rows, unid, positional) -> str:
    score = sum(r.witnesses > 0 for r in rows)
    if seen:
        return "seen: the composition is in the support"
    if ok:
        return (f"locally reachable: all {len(rows)} interfaces witnessed (each by >= "
                f"{min(r.witnesses for r in rows)} composition(s)), every unit identified")
    parts = []
    missing = [r for r in rows if not r.witnesses]
    if missing:
        parts.append("no local witness for " + "; ".join(_missing_text(r, positional) for r in missing))
    if unid:
        parts.append("not identified: " + ", ".join(unid))
    return f"not locally reachable: {'; '.join(parts)}; score {score}/{len(rows)}"


@dataclass(frozen=True)
class LocalSupport:
    """A support's witness index and identification: ``.reach`` applies the local criterion."""

    witnesses: Witnesses
    ident: Identification
    positional: bool

    def reach(self, comp) -> LocalReachability:
        comp = as_composition(comp)
        seen = comp in self.witnesses.compositions
        rows = tuple(_witness(self.witnesses, comp, t, self.positional) for t in range(1, len(comp) + 1))
        needed = {u for c in units_of(comp, self.positional).values() for u in c}
        units = self.ident.units
        unid = tuple(sorted(u for u in needed if u not in units or not units[u].identified))
        missing = tuple((r.step, r.interface) for r in rows if not r.witnesses)
        ok = seen or not (missing or unid)
        score = sum(r.witnesses > 0 for r in rows) / len(rows)
        why = _local_why(seen, ok, rows, unid, self.positional)
        return LocalReachability(comp, ok, seen, self.positional, rows, missing, unid, score,
                                 min(r.witnesses for r in rows), why)


def local_support(support, *, positional: bool = False, max_depth: int | None = None, n: int = 3000,
                  seed: int = 0) -> LocalSupport:
    """The witness index of ``support`` and its identification (``identify`` with ``positional``)."""
    comps = compositions_of(support, n, seed)
    ident = identify(comps, positional=positional, max_depth=max_depth)
    return LocalSupport(witnesses(comps), ident, positional)


def local_reach(support, targets, *, positional: bool = False, n: int = 3000, seed: int = 0):
    """Local reachability (Theorem 3.4) of each target from ``support`` (or a ``LocalSupport``)."""
    targets = compositions_of(targets, n, seed)
    if not isinstance(support, LocalSupport):
        support = local_support(support, positional=positional, max_depth=max(map(len, targets)), n=n, seed=seed)
    return [support.reach(c) for c in targets]


# --- names that moved to rl_enrichment.py -----------------------------------------------------

_MOVED = ("BAND", "STATUSES", "Enrichment", "InterfaceEnrichment", "check_band", "enrichment", "load_p0", "p0_of")


def __getattr__(name):  # old imports (hlsm.identify.local.enrichment, ...): rl_enrichment imports this module
    if name in _MOVED:
        return getattr(importlib.import_module("hlsm.identify.rl_enrichment"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
