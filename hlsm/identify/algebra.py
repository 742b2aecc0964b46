"""The algebraic criterion, exactly: per kind, the incidence system ``A theta = y`` solved over QQ.

``_incidence`` builds A (compositions x units). ``_solve`` finds an exact basis of its row space:
rows independent mod ``PRIME`` (numpy), then sympy's RREF of ``[B | I]`` over QQ for that basis,
then an exact check of the null space against every row (the package docstring, "Fast exact
path", says why the answer is exact). ``_unit_reports`` reads each unit's verdict off the RREF:
a certificate ``y . A = e_unit`` or a confounder ``A v = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from hlsm.identify.parse import KINDS, NAMES
from hlsm.support import Composition

PRIME = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64
_INDEX = {kind: {n: i for i, n in enumerate(names)} for kind, names in NAMES.items()}


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
        raise AssertionError("basis rows are not independent over QQ")  # cannot happen: see the package docstring
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
