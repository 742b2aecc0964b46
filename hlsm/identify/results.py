"""The answer for one support: ``identify`` runs both criteria into an ``Identification``.

``Identification.reach`` combines them into a verdict on one composition (``Reachability``):
seen, or every unit identified and every interface covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from hlsm.identify.algebra import UnitReport, _Block, _incidence, _solve, _unit_reports
from hlsm.identify.coverage import ModuleCoverage, _coverage, _interface_graph, interface_roles
from hlsm.identify.parse import INTERFACES, KINDS, NAMES, compositions_of, interfaces_of, unit_name, units_of
from hlsm.support import Composition, as_composition


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


def reach(support, targets, **kw) -> list[Reachability]:
    """Reachability of each target composition from ``support`` (see ``identify`` for ``kw``)."""
    targets = compositions_of(targets, kw.get("n", 3000), kw.get("seed", 0))
    if kw.get("positional"):
        kw.setdefault("max_depth", max(len(c) for c in targets))
    ident = support if isinstance(support, Identification) else identify(support, **kw)
    return [ident.reach(c) for c in targets]
