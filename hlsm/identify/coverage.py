"""The graph criterion: which interfaces a support covers, and per module, how it is exposed.

A module seen only as an atom (L = 1), or in no covered interface, can be identified and still
not compose (the paper's Finding 2). ``interface_roles`` says which side of an interface a
module can be on at all, so that "isolated" only flags modules that could have had one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx

from hlsm.identify.parse import KINDS, NAMES, interfaces_of
from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES
from hlsm.support import Composition


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
