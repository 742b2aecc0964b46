"""Identification checks for theorists: which modules does a support identify, what is reachable?

    python -m hlsm.identify SUPPORT.json [--train sft rl] [--target unseen] [--json [PATH]]

    from hlsm.identify import identify, compare, repair
    ident = identify(comps)                  # comps: list of compositions, a Support, or its dict
    ident.units["reverse"].identified        # + .certificate (y . A = e_unit) or .confounder (A v = 0)
    ident.reach(comp)                        # Reachability(reachable, unidentified, uncovered, why)
    compare(sft, rl, targets)                # RL inside vs beyond SFT; what the union identifies
    repair(comps, target, pool)              # additions from pool that make target reachable

A *support* is a set of compositions, each a tuple of ``(routing, skill)`` name pairs, one per
step (``hlsm.support.Composition``). Two formalizations answer "which atomic modules does it
identify", and a third combines them into "which unseen compositions are reachable".

Algebraic criterion (exact, sympy over QQ)
------------------------------------------
Model. Every latent selection contributes an additive term to what a trace reveals about it: the
routing r_t at step t contributes ``rho(r_t)`` and the skill s_t contributes ``sigma(s_t)``
(think of the log-likelihood of the trace, or any value, that factorizes over the cascade:
``log p(S) = sum_t log p(r_t | .) + log p(s_t | r_t, .)``). A composition c is observed only
through the totals ``y^R_c = sum_t rho(r_t)`` and ``y^S_c = sum_t sigma(s_t)``. So each kind
(routing, skill) gives a linear system ``A theta = y``: one row per composition, one column per
*unit*, the entry the number of times the composition uses that unit. The effect of unit j is
identifiable iff it is the same for every ``theta`` that fits the data, i.e. iff
``e_j`` lies in the row space of ``A``: there is a vector ``y`` over compositions with
``y . A = e_j`` (the *certificate*: the compositions with ``y != 0`` isolate the unit, their
signed combination cancels every other unit). Equivalently, deleting column j lowers the rank,
and no null vector ``v`` (``A v = 0``) has ``v_j != 0``; when the unit is not identified such a
``v`` is returned (the *confounder*: shifting the effects along ``v`` changes no observation).

Assumptions, stated so they can be disputed:
  - additivity over steps with no free intercept (the total is exactly the sum of step terms);
  - *split observation*: routing and skill totals are observed separately. With one scalar per
    composition (``y_c = y^R_c + y^S_c``), every step has exactly one routing and one skill, so
    ``(rho + k, sigma - k)`` fits equally well for any k: no single module is ever identified,
    only within-kind contrasts. Splitting the observation removes that gauge by assumption;
  - units: ``tied`` (default) — a module has one effect wherever it appears, the HLSM's premise
    that modules are *reused*; ``positional=True`` — one unit per (module, position t), named
    ``"module@t"``, for theorists who doubt position invariance (then an atom seen at L = 1 only
    identifies ``module@1``). Positional units carry a gauge of their own: every composition of
    depth L has one routing and one skill at each position t <= L, so at a single depth the
    columns of positions 1..L sum to the same vector and ``(theta@1 + k, theta@2 - k)`` fits
    equally well — nothing positional is identified until depths vary (atoms next to compounds).

A certificate is *a* witness (from the exact basis, sparsest rows preferred), not the sparsest
one; a composition that repeats a unit L times witnesses it alone (``1/L`` times its row).

Fast exact path. Rows are deduplicated (sparsest first). Gaussian elimination modulo the prime
``PRIME`` (numpy, vectorized) selects rows that are independent mod p, hence independent over QQ
(a nonzero minor mod p is a nonzero integer). sympy then computes, over QQ, the reduced row echelon
form of ``[B | I]`` for that small basis B (at most #units rows): its pivots give the rank, its right
half the certificates, its free columns an integer null-space basis N. Finally ``A N == 0`` is
checked exactly (integer matmul) for *all* rows; rows that fail (rank mod p < rank over QQ, which
a large p makes practically impossible) are added to the basis and the loop repeats. The answer
is therefore exact, not probabilistic; only the speed relies on p being large.

Graph criterion (networkx)
--------------------------
``Identification.bipartite()`` is the graph of compositions and the modules they use;
``Identification.interface_graph()`` is a directed graph of modules with an edge for every
*interface* seen. An interface is a data edge of the selection DAG: step t reads ``h_i`` with
``i >= 1`` (per ``ROUTINGS[r_t].operands(t)``; reading the input ``h_0`` is no interface, and
neither is the answer). Its keys, ordered pairs (producer-side module, consumer-side module), are

  - ``module`` (default): all four pairs ``(m_i, m_t)``, ``m_i in {r_i, s_i}``, ``m_t in {r_t, s_t}``
    — the modules of the step that produced the value against those of the step that reads it;
    covers held-out skills and held-out routings, on both sides of the hand-off;
  - ``skill-skill``: ``(s_i, s_t)`` only — producer skill and consumer skill, the ``f(g(x))`` view;
  - ``skill-routing``: ``(s_i, r_t)`` only — the skill that produced the value and the routing that
    reads it (a held-out skill used only as a consumer then needs no new interface).

Composability needs exposure at interfaces (the paper's Finding 2: a held-out skill reintroduced
only as atoms, L = 1, does not compose; reintroduced inside compositions, it does). Coverage
criteria per module: seen only as an atom, number of covered interfaces touching it, isolated in
the interface graph (used, able to take part in an interface, see ``interface_roles``, but in none).

Reachability
------------
A composition is *reachable* from a support iff it is in the support (seen), or every unit it uses
is identified (algebraic) and every interface it needs is covered (graph). ``Reachability`` says
which condition fails. ``compare`` does the support algebra of "RL inside vs beyond the SFT support";
``repair`` finds compositions from a pool whose addition makes a target reachable: greedy
(each step adds the candidate covering the most missing interfaces plus target-unit rank drops,
tie-broken by any rank gain; it finds a fix whenever the pool holds one and ``max_add`` allows,
but not always a minimum one) or exact (all subsets by increasing size: a minimum, small pools).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field, fields, is_dataclass
from fractions import Fraction
from pathlib import Path

import networkx as nx
import numpy as np

from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES
from hlsm.support import Composition, Split, Support, as_composition, is_inside

KINDS = ("routing", "skill")
NAMES = {"routing": ROUTING_NAMES, "skill": SKILL_NAMES}
INTERFACES = ("module", "skill-skill", "skill-routing")
INTERFACE_DOC = {
    "module": "(producer-step module, consumer-step module)",
    "skill-skill": "(producer skill, consumer skill)",
    "skill-routing": "(producer skill, consumer routing)",
}
PRIME = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64
EXACT_LIMIT = 200_000  # most subsets ``repair(exact=True)`` will examine
ENUMERATE = 10_000  # product supports with at most this many candidates are enumerated, not sampled
_INDEX = {kind: {n: i for i, n in enumerate(names)} for kind, names in NAMES.items()}


# --- units, interfaces, inputs ---------------------------------------------------------------


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


# --- exact linear algebra --------------------------------------------------------------------


def _independent_mod_p(A: np.ndarray, prime: int) -> list[int]:
    """Indices of rows of the integer matrix A that are linearly independent modulo ``prime``."""
    M = np.mod(A, prime).astype(np.int64)
    free = np.ones(len(M), dtype=bool)
    chosen = []
    for col in range(M.shape[1]):
        cand = np.flatnonzero(free & (M[:, col] != 0))
        if cand.size == 0:
            continue
        i, rest = cand[0], cand[1:]
        chosen.append(int(i))
        free[i] = False
        if rest.size:
            piv = M[i] * pow(int(M[i, col]), prime - 2, prime) % prime
            M[rest] = (M[rest] - M[rest, col, None] * piv % prime) % prime
    return chosen


def _rref_with_transform(B: list[list[int]]):
    """sympy RREF over QQ of ``[B | I]``: (R = rref(B), T with T B = R, pivots), as Fractions."""
    from sympy import QQ
    from sympy.polys.matrices import DomainMatrix

    r, k = len(B), len(B[0])
    aug = [[QQ(v) for v in row] + [QQ(int(i == j)) for j in range(r)] for i, row in enumerate(B)]
    R, pivots = DomainMatrix(aug, (r, k + r), QQ).rref()
    rows = [[Fraction(int(x.numerator), int(x.denominator)) for x in row] for row in R.to_list()]
    if len(pivots) != r or pivots[-1] >= k:
        raise AssertionError("basis rows are not independent over QQ")  # cannot happen: see docstring
    return [row[:k] for row in rows], [row[k:] for row in rows], list(pivots)


def _integer_null_basis(R: list[list[Fraction]], pivots: list[int], k: int) -> list[list[int]]:
    """Integer basis of the null space of an RREF matrix: one vector per free column, gcd 1."""
    out = []
    for f in sorted(set(range(k)) - set(pivots)):
        v = [Fraction(0)] * k
        v[f] = Fraction(1)
        for i, p in enumerate(pivots):
            v[p] = -R[i][f]
        scale = math.lcm(*(x.denominator for x in v))
        ints = [int(x * scale) for x in v]
        g = math.gcd(*ints)
        out.append([x // g for x in ints])
    return out


def _matmul_exact(A: np.ndarray, N: list[list[int]]) -> np.ndarray:
    """A @ N^T exactly: int64 when no overflow is possible, Python ints otherwise."""
    Nt = np.array(N, dtype=object).T
    bound = int(np.abs(A).max(initial=0)) * max((abs(x) for v in N for x in v), default=0) * A.shape[1]
    if bound < 2**62:
        return A @ Nt.astype(np.int64)
    return A.astype(object) @ Nt


@dataclass
class _Block:
    """The exact solution of one kind's system (internal)."""

    kind: str  # routing | skill
    units: tuple[str, ...]  # column names
    rows: np.ndarray  # distinct incidence rows, sparsest first
    reps: list[Composition]  # one composition per distinct row
    basis: list[int]  # indices into rows: an exact basis of the row space
    R: list[list[Fraction]]  # rref of rows[basis]
    T: list[list[Fraction]]  # T @ rows[basis] == R
    pivots: list[int]
    null: list[list[int]]  # integer basis of the null space (vectors over units)

    @property
    def col(self) -> dict[str, int]:
        """unit name -> column index."""
        return {u: j for j, u in enumerate(self.units)}


def _solve(kind: str, units: tuple[str, ...], A: np.ndarray, comps: list[Composition]) -> _Block:
    packed = np.ascontiguousarray(A.astype(np.int8) if A.max(initial=0) < 128 else A)
    _, first = np.unique(packed.view(np.dtype((np.void, packed.strides[0]))), return_index=True)
    first = first[np.lexsort((first, (A[first] != 0).sum(1)))]  # sparsest rows first
    rows, reps = A[first], [comps[i] for i in first]
    basis = _independent_mod_p(rows, PRIME)
    while True:
        R, T, pivots = _rref_with_transform(rows[basis].tolist())
        null = _integer_null_basis(R, pivots, len(units))
        if not null:
            break
        resid = _matmul_exact(rows, null)
        bad = np.flatnonzero((resid != 0).any(axis=1))
        if bad.size == 0:
            break
        extra = _independent_mod_p(np.mod(resid[bad], PRIME).astype(np.int64), PRIME)
        basis += [int(bad[i]) for i in extra] or [int(bad[0])]
    return _Block(kind, units, rows, reps, basis, R, T, pivots, null)


def _rank(rows: list[list[Fraction]]) -> int:
    """Rank of a small rational matrix (Gaussian elimination with Fractions)."""
    rows = [[Fraction(x) for x in r] for r in rows if any(r)]
    rank = 0
    for col in range(len(rows[0]) if rows else 0):
        piv = next((i for i in range(rank, len(rows)) if rows[i][col] != 0), None)
        if piv is None:
            continue
        rows[rank], rows[piv] = rows[piv], rows[rank]
        for i in range(rank + 1, len(rows)):
            if rows[i][col] != 0:
                f = rows[i][col] / rows[rank][col]
                rows[i] = [a - f * b for a, b in zip(rows[i], rows[rank])]
        rank += 1
    return rank


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitReport:
    """What the algebraic criterion says about one unit (a module, or module@position)."""

    unit: str  # module name, or "module@t" with positional units
    module: str  # the skill or routing name
    kind: str  # "routing" | "skill"
    position: int | None  # step t for positional units, None when tied
    count: int  # compositions of the support that use it
    identified: bool  # e_unit lies in the row space of the support's incidence matrix
    certificate: tuple[tuple[Composition, Fraction], ...]  # y with y . A = e_unit (identified only)
    confounder: tuple[tuple[str, int], ...]  # null vector v with A v = 0, v[unit] != 0 (else empty)


@dataclass(frozen=True)
class ModuleCoverage:
    """What the graph criterion says about one module."""

    module: str  # the skill or routing name
    kind: str  # "routing" | "skill"
    compositions: int  # compositions of the support that use it
    compound: int  # ... of which have depth L >= 2
    interfaces: int  # distinct covered interfaces with this module as producer or consumer
    atom_only: bool  # used, but only in L = 1 compositions
    isolated: bool  # used and able to interface (see interface_roles), but touches no covered one


@dataclass(frozen=True)
class Reachability:
    """Whether one composition is predicted reachable from a support, and which condition fails."""

    composition: Composition
    reachable: bool  # seen, or (all units identified and all interfaces covered)
    seen: bool  # the composition itself is in the support
    unidentified: tuple[str, ...]  # units it uses that the support does not identify
    absent: tuple[str, ...]  # ... of which the support never uses at all
    uncovered: tuple[tuple[str, str], ...]  # interfaces it needs that the support never shows
    why: str  # one line for people


@dataclass(frozen=True)
class Identification:
    """The answer for one support: per-unit identification, per-module coverage, interfaces."""

    n_compositions: int  # distinct compositions in the support
    depths: tuple[int, ...]  # depths L present
    positional: bool  # units are (module, position) pairs instead of modules
    interface: str  # interface key: "module", "skill-skill" or "skill-routing"
    units: dict[str, UnitReport]  # every unit of the inventory, absent ones included
    rank: dict[str, int]  # kind -> rank of its incidence matrix
    twins: tuple[tuple[str, ...], ...]  # groups of same-kind units with identical columns
    modules: dict[str, ModuleCoverage]  # every module of the inventory
    interfaces: dict[tuple[str, str], int]  # covered interface -> compositions showing it
    possible_interfaces: int  # interfaces between modules of the support that its depths allow
    components: tuple[tuple[str, ...], ...]  # module groups of the composition-module graph
    interface_components: tuple[tuple[str, ...], ...]  # weak components of the interface graph
    compositions: frozenset = field(repr=False, metadata={"json": False})  # the support itself
    _blocks: dict = field(default=None, repr=False, compare=False)  # kind -> _Block

    @property
    def identified(self) -> tuple[str, ...]:
        return tuple(u for u, r in self.units.items() if r.identified)

    @property
    def unidentified(self) -> tuple[str, ...]:
        """Units the support uses but does not identify (absent units are not listed)."""
        return tuple(u for u, r in self.units.items() if r.count and not r.identified)

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(u for u, r in self.units.items() if not r.count)

    def reach(self, comp) -> Reachability:
        """Predict whether ``comp`` is reachable, naming the failing condition."""
        comp = as_composition(comp)
        seen = comp in self.compositions
        needed = {u for c in units_of(comp, self.positional).values() for u in c}
        unid = tuple(sorted(u for u in needed if u not in self.units or not self.units[u].identified))
        absent = tuple(u for u in unid if u not in self.units or not self.units[u].count)
        uncovered = tuple(sorted(interfaces_of(comp, self.interface) - self.interfaces.keys()))
        ok = seen or not (unid or uncovered)
        if seen:
            why = "seen: the composition is in the support"
        elif ok:
            why = f"reachable: {len(needed)} units identified, every interface it needs covered"
        else:
            parts = []
            if unid:
                parts.append("not identified: " + ", ".join(unid))
            if absent:
                parts.append("never in the support: " + ", ".join(absent))
            if uncovered:
                parts.append("interfaces not covered: " + ", ".join(f"{a}->{b}" for a, b in uncovered))
            why = "not reachable: " + "; ".join(parts)
        return Reachability(comp, ok, seen, unid, absent, uncovered, why)

    def matrix(self, kind: str, basis_only: bool = False):
        """The (distinct-row) incidence matrix of one kind as a sympy Matrix, and its row labels."""
        from sympy import Matrix

        b = self._block(kind)
        idx = b.basis if basis_only else range(len(b.rows))
        return Matrix([b.rows[i].tolist() for i in idx]), [b.reps[i] for i in idx]

    def bipartite(self):
        """networkx Graph: composition nodes ("c", comp) -- module nodes ("m", name)."""
        g = nx.Graph()
        for kind in KINDS:
            g.add_nodes_from((("m", m) for m in NAMES[kind]), kind=kind, bipartite=1)
        for comp in self.compositions:
            g.add_node(("c", comp), bipartite=0)
            g.add_edges_from((("c", comp), ("m", m)) for step in comp for m in step)
        return g

    def interface_graph(self):
        """networkx DiGraph over modules that can interface: edge producer -> consumer per interface."""
        depth, key = self.depths[-1], self.interface
        nodes = [m for m, c in self.modules.items() if c.compositions and any(interface_roles(m, key, depth))]
        return _interface_graph(nodes, self.interfaces)

    def _block(self, kind: str) -> _Block:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
        return self._blocks[kind]


def identify(
    support,
    *,
    positional: bool = False,
    interface: str = "module",
    max_depth: int | None = None,
    n: int = 3000,
    seed: int = 0,
) -> Identification:
    """Which units does ``support`` identify (exactly), which interfaces does it cover?

    ``support``: a list of compositions, a ``Support`` (enumerated, or ``n`` sampled with
    ``seed`` when larger), or a Support dict. ``max_depth`` (positional units only) extends the
    unit inventory to positions the support never reaches, e.g. to ask about deeper targets.
    """
    if interface not in INTERFACES:
        raise ValueError(f"unknown interface {interface!r}; allowed: {', '.join(INTERFACES)}")
    comps = compositions_of(support, n, seed)
    depths = tuple(sorted({len(c) for c in comps}))
    positions = range(1, max(depths[-1], max_depth or 0) + 1) if positional else (None,)
    blocks, reports, ranks, twins = {}, {}, {}, []
    for kind in KINDS:
        units = tuple(unit_name(m, t) for t in positions for m in NAMES[kind])
        A = _incidence(comps, kind, positional, len(units))
        b = blocks[kind] = _solve(kind, units, A, comps)
        ranks[kind] = len(b.basis)
        counts = (A != 0).sum(axis=0)
        reports.update(_unit_reports(b, counts))
        groups = {}
        for j, u in enumerate(units):
            if counts[j]:
                groups.setdefault(b.rows[:, j].tobytes(), []).append(u)
        twins += [tuple(g) for g in groups.values() if len(g) > 1]
    return Identification(len(comps), depths, positional, interface, reports, ranks, tuple(twins),
                          *_coverage(comps, interface, depths[-1]), frozenset(comps), blocks)


def _incidence(comps: list[Composition], kind: str, positional: bool, width: int) -> np.ndarray:
    """Rows: compositions; columns: units of one kind (position-major when positional); counts."""
    index, k, step_i = _INDEX[kind], len(NAMES[kind]), KINDS.index(kind)
    ri, ci = [], []
    for i, comp in enumerate(comps):
        for t, step in enumerate(comp):
            ri.append(i)
            ci.append(index[step[step_i]] + (t * k if positional else 0))
    A = np.zeros((len(comps), width), dtype=np.int64)
    np.add.at(A, (ri, ci), 1)
    return A


def _unit_reports(b: _Block, counts: np.ndarray) -> dict[str, UnitReport]:
    """Per unit: identified iff its pivot row of the RREF is a unit vector; certificate or confounder."""
    pivot_row = {p: i for i, p in enumerate(b.pivots)}
    out = {}
    for j, u in enumerate(b.units):
        module, _, pos = u.partition("@")
        cert, conf = (), ()
        i = pivot_row.get(j)
        if i is not None and sum(x != 0 for x in b.R[i]) == 1:
            cert = tuple((b.reps[b.basis[m]], y) for m, y in enumerate(b.T[i]) if y != 0)
        else:  # some null vector moves this unit: take the sparsest, oriented so v[unit] > 0
            v = min((v for v in b.null if v[j]), key=lambda v: (sum(x != 0 for x in v), v))
            sign = 1 if v[j] > 0 else -1
            conf = tuple((b.units[m], sign * x) for m, x in enumerate(v) if x)
        position = int(pos) if pos else None
        out[u] = UnitReport(u, module, b.kind, position, int(counts[j]), bool(cert), cert, conf)
    return out


def _coverage(comps: list[Composition], interface: str, depth: int):
    """The graph side: per-module coverage, covered interfaces, possible count, components."""
    iface = Counter(k for comp in comps for k in interfaces_of(comp, interface))
    modules = {}
    use = Counter(m for comp in comps for m in {m for step in comp for m in step})
    compound = Counter(m for comp in comps if len(comp) >= 2 for m in {m for step in comp for m in step})
    touch = Counter(m for key in iface for m in set(key))
    roles = {m: interface_roles(m, interface, depth) for m in use}
    able = [m for m in use if any(roles[m])]
    for kind in KINDS:
        for m in NAMES[kind]:
            atom_only, isolated = bool(use[m]) and not compound[m], m in able and not touch[m]
            modules[m] = ModuleCoverage(m, kind, use[m], compound[m], touch[m], atom_only, isolated)
    possible = sum(p for p, _ in roles.values()) * sum(c for _, c in roles.values())
    # components of the bipartite composition-module graph, computed on its module projection
    # (a path through each composition's modules connects exactly what its star would)
    links = set()
    for comp in comps:
        ms = tuple(dict.fromkeys(m for step in comp for m in step))
        links.update(zip(ms, ms[1:]))
    g = nx.Graph()
    g.add_nodes_from(use)
    g.add_edges_from(links)
    components = _groups(nx.connected_components(g))
    iface_components = _groups(nx.weakly_connected_components(_interface_graph(able, iface)))
    return modules, dict(iface), possible, components, iface_components


def interface_roles(module: str, interface: str, depth: int) -> tuple[bool, bool]:
    """(can produce, can consume) an interface of this key, in compositions up to ``depth``.

    Any module of a step whose value is read is on the producer side (skills only, unless the key
    is ``module``). A skill consumes under ``module`` and ``skill-skill``; a routing consumes
    under ``module`` and ``skill-routing`` iff at some step t <= depth it reads a produced value
    (``reuse_input`` never does).
    """
    if depth < 2:
        return False, False
    if module in ROUTINGS:
        reads = any(i >= 1 for t in range(2, depth + 1) for i in ROUTINGS[module].operands(t))
        return interface == "module", reads and interface != "skill-skill"
    return True, interface != "skill-routing"


def _interface_graph(nodes, iface: dict) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for (a, b), n in iface.items():
        g.add_edge(a, b, compositions=n)
    return g


def _groups(sets) -> tuple[tuple[str, ...], ...]:
    order = {m: i for i, m in enumerate(ROUTING_NAMES + SKILL_NAMES)}
    groups = [tuple(sorted(s, key=order.get)) for s in sets]
    return tuple(sorted(groups, key=lambda g: (-len(g), order[g[0]])))


def reach(support, targets, **kw) -> list[Reachability]:
    """Reachability of each target composition from ``support`` (see ``identify`` for ``kw``)."""
    targets = compositions_of(targets, kw.get("n", 3000), kw.get("seed", 0))
    if kw.get("positional"):
        kw.setdefault("max_depth", max(len(c) for c in targets))
    ident = support if isinstance(support, Identification) else identify(support, **kw)
    return [ident.reach(c) for c in targets]


# --- support algebra -------------------------------------------------------------------------


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
        added, searched = [], 0
        for _ in range(max_add):
            state, missing = _target_state(ident, target)
            spans = {k: _rank(m) for k, (_, _, m) in state.items()}
            best, best_score = None, (0, 0)
            for c in cands:
                if c in added:
                    continue
                searched += 1
                gain, rank_gain = len(keys[c] & missing), 0
                for kind, (b, col, m) in state.items():
                    w = _null_image(b, col, c, positional)
                    if any(w):
                        rank_gain += 1
                        gain += bool(spans[kind]) and _rank([*m, w]) == spans[kind]
                if (gain, rank_gain) > best_score:
                    best, best_score = c, (gain, rank_gain)
            if best is None:
                break
            added.append(best)
            ident = identify(base + added, **kw)
            if ident.reach(target).reachable:
                break
    after = identify(base + list(added), **kw).reach(target)
    return Repair(target, tuple(added), after.reachable, "exact" if exact else "greedy", searched,
                  before, after)


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


# --- report and JSON -------------------------------------------------------------------------


def jsonable(obj):
    """Plain JSON data from the result dataclasses (Fractions as "p/q" strings)."""
    if is_dataclass(obj):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in fields(obj)
            if not f.name.startswith("_") and f.metadata.get("json", True)
        }
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: jsonable(v) for k, v in obj.items()}
        return [[jsonable(k), jsonable(v)] for k, v in obj.items()]
    if isinstance(obj, (frozenset, set)):
        return sorted(jsonable(x) for x in obj)
    if isinstance(obj, (list, tuple)):
        return [jsonable(x) for x in obj]
    if isinstance(obj, Fraction):
        return str(obj)
    return obj


def format_certificate(r: UnitReport) -> str:
    if r.identified:
        terms = [f"  {y!s:>6} * [{show(c)}]" for c, y in r.certificate]
        return f"{r.unit} = sum of these rows ({r.kind} counts), y . A = e_{r.unit}:\n" + "\n".join(terms)
    terms = " ".join(f"{x:+d}*{u}" for u, x in r.confounder)
    return f"{r.unit} not identified: A v = 0 for v = {terms} (shift the effects by v: no trace changes)"


def format_report(ident: Identification, source: str = "", targets=(), comparison=None, repairs=(),
                  show_n: int = 8) -> str:
    """A readable report of an identification, target reachability, a comparison, repairs."""
    units_word = "(module, position) units" if ident.positional else "tied module units"
    out = [
        "== support",
        f"  {ident.n_compositions} distinct compositions, depths {list(ident.depths)}"
        + (f"; {source}" if source else ""),
        f"  model: split observation (routing and skill totals), {units_word}; "
        f"interface = {INTERFACE_DOC[ident.interface]} along each data edge",
        "== algebraic (exact over QQ): unit identified iff e_unit is in the row space",
    ]
    for kind in KINDS:
        present = [r for r in ident.units.values() if r.kind == kind and r.count]
        ok = [r.unit for r in present if r.identified]
        bad = [r.unit for r in present if not r.identified]
        out.append(f"  {kind}: {len(present)} units used, rank {ident.rank[kind]}, identified {len(ok)}")
        if bad:
            more = f" ... ({len(bad) - 3 * show_n} more)" if len(bad) > 3 * show_n else ""
            out.append(f"    NOT identified: {', '.join(bad[: 3 * show_n])}{more}")
    for group in ident.twins:
        out.append(f"  always together (identical columns): {', '.join(group)}")
    for u in ident.unidentified[:show_n]:
        out.append("  " + format_certificate(ident.units[u]))
    shown = [r for r in ident.units.values() if r.identified][:show_n]
    for r in shown:
        w = r.certificate
        more = f" + {len(w) - 1} more" if len(w) > 1 else ""
        out.append(f"  witness {r.unit} ({len(w)} composition(s)): {w[0][1]} * [{show(w[0][0])}]{more}")
    n_id = len(ident.identified)
    if n_id > len(shown):
        out.append(f"  ... {n_id - len(shown)} more identified units (--witness UNIT prints any certificate)")
    if ident.absent:
        out.append(f"  never in the support ({len(ident.absent)}): {', '.join(ident.absent[:show_n])}"
                   + (" ..." if len(ident.absent) > show_n else ""))
    out += [
        "== graph",
        f"  composition-module graph: {ident.n_compositions} compositions, "
        f"{sum(1 for m in ident.modules.values() if m.compositions)} modules, "
        f"{len(ident.components)} connected component(s)",
        f"  interfaces covered: {len(ident.interfaces)} of {ident.possible_interfaces} possible; "
        f"interface graph: {len(ident.interface_components)} weak component(s)",
    ]
    for group in ident.components[1:]:
        out.append(f"  separate component: {', '.join(group)}")
    atoms = [m for m, c in ident.modules.items() if c.atom_only]
    iso = [m for m, c in ident.modules.items() if c.isolated]
    if atoms:
        out.append(f"  seen only as atoms (L=1): {', '.join(atoms)}")
    if iso:
        out.append(f"  no covered interface: {', '.join(iso)}")
    if targets:
        ok = sum(r.reachable for r in targets)
        seen = sum(r.seen for r in targets)
        fail_id = sum(bool(r.unidentified) and not r.reachable for r in targets)
        fail_if = sum(bool(r.uncovered) and not r.reachable for r in targets)
        out += [
            "== targets",
            f"  reachable {ok} / {len(targets)} (seen {seen}); not reachable because a unit is not "
            f"identified: {fail_id}, because an interface is not covered: {fail_if}",
        ]
        bad = [r for r in targets if not r.reachable][:show_n]
        for r in bad:
            out.append(f"  [{show(r.composition)}] {r.why}")
        if len(bad) < len(targets) - ok:
            out.append(f"  ... {len(targets) - ok - len(bad)} more not reachable")
    if comparison is not None:
        c = comparison
        out += [
            "== RL vs SFT support",
            f"  RL {c.n_rl} compositions: {c.rl_inside} inside the SFT support, {c.rl_beyond} beyond"
            + ("" if c.support_inside is None else f" (hlsm.support.is_inside: {c.support_inside})"),
            f"  modules new in RL: {', '.join(c.new_modules) or '-'}; "
            f"interfaces new in RL: {len(c.new_interfaces)}",
            f"  identified: SFT {len(c.identified_sft)}, SFT+RL {len(c.identified_union)}; "
            f"gained: {', '.join(c.gained) or '-'}",
        ]
        if c.n_targets:
            out.append(f"  targets reachable: SFT {c.reachable_sft} / {c.n_targets}, "
                       f"SFT+RL {c.reachable_union} / {c.n_targets}")
    for rp in repairs:
        out.append(f"== repair [{show(rp.target)}] ({rp.method}, {rp.searched} evaluated)")
        if rp.found:
            out.append(f"  add {len(rp.added)}: " + "; ".join(f"[{show(c)}]" for c in rp.added))
        else:
            out.append(f"  no fix within the pool and max-add; best effort added {len(rp.added)}; "
                       f"still: {rp.after.why}")
    return "\n".join(out)


# --- CLI -------------------------------------------------------------------------------------


def _pick(obj, names, n, seed, what):
    """Compositions of the named supports of a Split (or the input itself when it is no Split)."""
    if isinstance(obj, Split):
        if not names:
            raise ValueError(f"{what}: name supports of split {obj.name!r}: "
                             f"{sorted(obj.train) + sorted(obj.eval)}")
        return union(*(obj.support(nm) for nm in names), n=n, seed=seed), f"{what} {'+'.join(names)}"
    if names:
        raise ValueError(f"--{what} {names} selects supports by name, but the input is not a Split")
    return compositions_of(obj, n, seed), ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hlsm.identify", description=__doc__.split("\n")[0])
    ap.add_argument("input", help="JSON: a list of compositions, a Support dict or a Split dict")
    ap.add_argument("--train", nargs="+", default=None, help="split supports to union (default: sft)")
    ap.add_argument("--target", nargs="+", default=None,
                    help="split supports to predict (default: the split's unseen supports)")
    ap.add_argument("--targets", help="JSON file of target compositions (list or Support)")
    ap.add_argument("--compare", nargs=2, metavar=("SFT", "RL"), help="split supports to compare")
    ap.add_argument("--repair", type=int, default=0, metavar="K", help="repair K unreachable targets")
    ap.add_argument("--pool", help="split support name or JSON file to draw repairs from")
    ap.add_argument("--exact", action="store_true", help="exact minimum repair (small pools)")
    ap.add_argument("--max-add", type=int, default=5)
    ap.add_argument("--n", type=int, default=3000, help="compositions sampled from product supports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--positional", action="store_true", help="units are (module, position) pairs")
    ap.add_argument("--interface", choices=INTERFACES, default="module")
    ap.add_argument("--witness", nargs="+", default=(), metavar="UNIT", help="print units' certificates")
    ap.add_argument("--matrix", action="store_true", help="print the exact basis matrices (sympy)")
    ap.add_argument("--show", type=int, default=8, help="examples to list per section")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write JSON (to stdout with '-')")
    args = ap.parse_args(argv)

    obj = load(args.input)
    n, seed = args.n, args.seed
    split = obj if isinstance(obj, Split) else None
    if split is not None and args.train is None:
        args.train = ["sft"] if "sft" in split.train else sorted(split.train)
    if split is not None and args.target is None and not args.targets:
        args.target = list(split.unseen)
    train, source = _pick(obj, args.train, n, seed, "train")
    targets = []
    if args.targets:
        targets = compositions_of(load(args.targets), n, seed)
    elif args.target:
        targets = _pick(obj, args.target, n, seed, "target")[0]
    depth = max(len(c) for c in [*train, *targets])
    kw = dict(positional=args.positional, interface=args.interface)
    ident = identify(train, max_depth=depth, **kw)
    reached = [ident.reach(c) for c in targets]
    comparison = None
    if args.compare:
        if split is None:
            raise ValueError("--compare names two supports of a Split input")
        a, b = (split.support(nm) for nm in args.compare)
        comparison = compare(a, b, targets, n=n, seed=seed, **kw)
    repairs = []
    if args.repair:
        if not args.pool:
            raise ValueError("--repair needs --pool (a split support name or a JSON file)")
        pool = (split.support(args.pool) if split is not None and not Path(args.pool).exists()
                else load(args.pool))
        pool = compositions_of(pool, n, seed)
        for r in [r for r in reached if not r.reachable][: args.repair]:
            repairs.append(repair(train, r.composition, pool, max_add=args.max_add, exact=args.exact, **kw))

    for u in args.witness:
        if u not in ident.units:
            raise ValueError(f"unknown unit {u!r}; units: {', '.join(ident.units)}")
    report = format_report(ident, source, reached, comparison, repairs, args.show)
    extra = [format_certificate(ident.units[u]) for u in args.witness]
    if args.matrix:
        for kind in KINDS:
            m, labels = ident.matrix(kind, basis_only=True)
            cols = " ".join(ident._block(kind).units)
            extra.append(f"== {kind} basis rows ({m.rows} x {m.cols}), columns: {cols}")
            extra += [f"  {list(m.row(i))}  [{show(c)}]" for i, c in enumerate(labels)]
    text = "\n".join([report, *extra])
    data = {
        "source": source,
        "identification": jsonable(ident),
        "targets": jsonable(reached),
        "comparison": jsonable(comparison),
        "repairs": jsonable(repairs),
    }
    if args.json == "-":
        json.dump(data, sys.stdout, indent=1)
        print()
        return 0
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ValueError as err:  # bad input: one line naming it, not a traceback
        raise SystemExit(f"error: {err}") from None
