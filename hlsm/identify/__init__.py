"""Identification checks for theorists: which modules does a support identify, what is reachable?

    python -m hlsm.identify SUPPORT.json [--train sft rl] [--target unseen] [--json [PATH]]
    python -m hlsm.identify SPLIT.json --criterion local [--positional]     # Theorem 3.4, with reasons
    python -m hlsm.identify SPLIT.json --p0 P0.json [--rl NAME ...] [--band LO HI]  # RL enrichment

    from hlsm.identify import identify, compare, repair
    ident = identify(comps)                  # comps: list of compositions, a Support, or its dict
    ident.units["reverse"].identified        # + .certificate (y . A = e_unit) or .confounder (A v = 0)
    ident.reach(comp)                        # Reachability(reachable, unidentified, uncovered, why)
    compare(sft, rl, targets)                # RL inside vs beyond SFT; what the union identifies
    repair(comps, target, pool)              # additions from pool that make target reachable
    local_support(comps).reach(comp)         # LocalReachability: local witnesses per step (Theorem 3.4)
    enrichment(sft, rl, p0, targets)         # [Enrichment]: can RL (policy measured by p0) reach them?

A *support* is a set of compositions, each a tuple of ``(routing, skill)`` name pairs, one per
step (``hlsm.support.Composition``). Two formalizations answer "which atomic modules does it
identify", a third combines them into "which unseen compositions are reachable", and a fourth
(local, the paper's Theorem 3.4) asks it per step; the RL-enrichment check asks what RL can add.

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

Local criterion (the paper's Theorem 3.4; ``local.py`` states it in full)
-------------------------------------------------------------------------
Step t of c reads ``O_t = ROUTINGS[r_t].operands(t)``. Its *local interface* is
``I_t(c) = ((r_t, s_t), (m_i for i in O_t))``, ``m_i = (r_i, s_i)`` for ``i >= 1`` and ``m_0 = INPUT``:
the parent selection with the ordered selections of the children it reads. A *local witness* of
``I_t(c)`` in S is some ``c'`` in S and step t' with ``I_t'(c') == I_t(c)`` (tied: any t'; positional:
t' == t). c is *locally reachable* from S iff c is in S, or every ``I_t(c)`` has a local witness and
every unit of c is identified (algebraic). ``LocalReachability`` names the steps without a witness
and the unidentified units, and grades c by the fraction of witnessed steps. A witness of ``I_t``
covers every ``module`` interface key of step t, so this criterion is stronger than the graph one.

RL enrichment (``rl_enrichment.py`` states it in full). Given p0 (the SFT policy's success rate) per
RL composition and a band (lo, hi), exclusive, an RL composition is *active* when ``lo < p0 < hi``
(reached, not saturated; an exact-answer reward tells success from failure). An interface not
witnessed in SFT is *enrichable* iff an active RL composition witnesses it. RL is predicted to make
c reachable iff c is locally reachable from SFT + the active RL compositions (units identified there
too). ``Enrichment`` gives each interface's status: ``sft``, ``enrichable`` (via which composition,
its p0), ``saturated`` (p0 >= hi), ``unreached`` (p0 <= lo), ``unmeasured`` or ``no witness``.

Files
-----
Each file imports only those above it; this one re-exports the public API.

  parse.py          units and interfaces of a composition; supports from lists, Supports, JSON files
  algebra.py        the algebraic criterion: incidence matrices, the exact mod-p + sympy solve, ``UnitReport``
  coverage.py       the graph criterion: interfaces covered, ``ModuleCoverage``, components
  results.py        ``identify`` -> ``Identification`` (both criteria, ``.reach``), and ``reach``
  local.py          the local criterion: local interfaces, their witnesses (``local_support``, ``local_reach``
                    -> ``LocalReachability``)
  rl_enrichment.py  the RL-enrichment check on top of it (``enrichment`` -> ``Enrichment``), p0 files, the band
  repairs.py        support algebra: ``compare`` (``Comparison``) and ``repair`` (``Repair``)
  report.py         ``format_report``, ``format_certificate``, ``format_local``, ``format_enrichment`` (text)
                    and ``jsonable`` (JSON)
  cli.py            ``main``, the command line; ``__main__.py`` runs it for ``python -m hlsm.identify``
"""

from hlsm.identify.algebra import PRIME, UnitReport
from hlsm.identify.cli import main
from hlsm.identify.coverage import ModuleCoverage, interface_roles
from hlsm.identify.local import (
    INPUT,
    InterfaceWitness,
    LocalReachability,
    LocalSupport,
    Witnesses,
    local_interface,
    local_interfaces,
    local_reach,
    local_support,
    show_interface,
    witnesses,
)
from hlsm.identify.parse import (
    ENUMERATE,
    INTERFACE_DOC,
    INTERFACES,
    KINDS,
    NAMES,
    compositions_of,
    interfaces_of,
    load,
    parse_composition,
    show,
    union,
    unit_name,
    units_of,
)
from hlsm.identify.repairs import EXACT_LIMIT, Comparison, Repair, compare, repair
from hlsm.identify.report import format_certificate, format_enrichment, format_local, format_report, jsonable
from hlsm.identify.results import Identification, Reachability, identify, reach
from hlsm.identify.rl_enrichment import (
    STATUSES,
    Enrichment,
    InterfaceEnrichment,
    check_band,
    enrichment,
    load_p0,
    p0_of,
)

# constants are copies: rebinding hlsm.identify.PRIME (or EXACT_LIMIT, ENUMERATE) changes nothing;
# patch the module that reads it (hlsm.identify.algebra.PRIME, .repairs.EXACT_LIMIT, .parse.ENUMERATE)
__all__ = [
    "ENUMERATE", "EXACT_LIMIT", "INPUT", "INTERFACES", "INTERFACE_DOC", "KINDS", "NAMES", "PRIME", "STATUSES",
    "Comparison", "Enrichment", "Identification", "InterfaceEnrichment", "InterfaceWitness", "LocalReachability",
    "LocalSupport", "ModuleCoverage", "Reachability", "Repair", "UnitReport", "Witnesses",
    "check_band", "compare", "compositions_of", "enrichment", "format_certificate", "format_enrichment",
    "format_local", "format_report", "identify", "interface_roles", "interfaces_of", "jsonable", "load",
    "load_p0", "local_interface", "local_interfaces", "local_reach", "local_support", "main", "p0_of",
    "parse_composition", "reach", "repair", "show", "show_interface", "union", "unit_name", "units_of",
    "witnesses",
]
