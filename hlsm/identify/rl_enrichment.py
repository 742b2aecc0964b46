"""The RL-enrichment check: can RL, from an SFT policy measured by p0, make a target reachable?

    enrichment(sft, rl, p0, targets)              # [Enrichment]: per target, per step, why or why not
    p0_of(data), load_p0(path)                    # p0 per composition from JSON data or a file
    check_band((lo, hi))                          # the p0 band of the active RL compositions

It is the local criterion (``local.py``, Theorem 3.4) applied to SFT plus the RL compositions a
GRPO group can learn from.

RL enrichment. Inputs: the SFT support, the RL compositions, and ``p0[c']`` for RL compositions:
the SFT policy's success rate on items of c' (e.g. the ``"reward/answer"`` of
``hlsm.grpo.sampled_reward`` on them), and a band ``(lo, hi)``, exclusive, default ``(0, 1)``.
An RL composition is *active* when ``lo < p0 < hi``: the policy reaches it and is not saturated on
it, and with an exact-answer reward success is distinguished from failure, so a GRPO group on it
has a nonzero reward variance. An interface ``I_t(c)`` not witnessed in SFT is *enrichable* iff it
has a witness in an active RL composition (the one reported, ``via``, maximizes ``p0 (1 - p0)``,
the group reward variance). RL is predicted to make c reachable iff c is in SFT or active, or every
interface is witnessed in SFT or enrichable and every unit of c is identified by SFT + the active
RL compositions: i.e. c is locally reachable from ``SFT + active RL``. (Refinement: the units are
identified from the *active* RL compositions, not all of RL, for the same reason the interfaces
are: an RL composition at p0 = 0 or 1 gives GRPO no signal, so it cannot teach anything.)

Each non-SFT interface gets a status: ``enrichable``; ``saturated`` (some RL witness has
``p0 >= hi``: the SFT policy already solves a composition that shows it; RL adds nothing, but the
interface is not missing either); ``unreached`` (every measured RL witness has ``p0 <= lo``);
``unmeasured`` (RL witnesses, none with a p0); ``no witness`` (neither SFT nor RL shows it).
``reachable_with_saturated`` repeats the prediction counting saturated RL compositions as learned
too: the strict prediction asks what RL *changes*, this one what the policy has after RL.

Assumptions, stated so they can be disputed: p0 is measured per composition, not per interface
(success on c' implies each interface of c' was executed right, up to coincidental answers; failure
on c' says nothing about which one failed); p0 is the *initial* policy's, so interfaces whose only
witnesses start at p0 = 0 may become reachable once RL raises p0 elsewhere (a one-step prediction,
not a fixed point); a product-form support is materialized as a sample (``compositions_of``), so
"no witness" can be a sampling artifact (pass explicit supports or a larger ``n``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hlsm.identify.local import Interface, local_interfaces, local_support, show_interface
from hlsm.identify.parse import compositions_of, parse_composition, show, union
from hlsm.support import Composition, Support, as_composition

STATUSES = ("sft", "enrichable", "saturated", "unreached", "unmeasured", "no witness")
BAND = (0.0, 1.0)


# --- p0 ---------------------------------------------------------------------------------------


def _probability(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ValueError(f"p0 of {where} must be a number in [0, 1], got {value!r}")
    return float(value)


def p0_of(data) -> dict[Composition, float]:
    """p0 per composition from JSON data: ``{"chain:reverse > skip:sort_asc": 0.3, ...}`` (keys as
    ``show`` or ``hlsm.evaluate.composition_name`` writes them), or a list of ``[composition, p0]``
    pairs or ``{"composition": ..., "p0": ...}`` objects. ValueError names the first bad entry."""
    if isinstance(data, dict):
        items = [(parse_composition(k), v, k) for k, v in data.items()]
    elif isinstance(data, list):
        items = []
        for e in data:
            if isinstance(e, dict) and set(e) == {"composition", "p0"}:
                c, v = e["composition"], e["p0"]
            elif isinstance(e, (list, tuple)) and len(e) == 2:
                c, v = e
            else:
                raise ValueError(f"p0 entry {e!r}: expected [composition, p0] or {{'composition': ..., 'p0': ...}}")
            c = parse_composition(c) if isinstance(c, str) else as_composition(c)
            items.append((c, v, show(c)))
    else:
        raise ValueError(f"p0: expected a dict (composition -> p0) or a list of pairs, got {type(data).__name__}")
    out = {}
    for c, v, where in items:
        p = _probability(v, repr(where))
        if out.get(c, p) != p:
            raise ValueError(f"p0 of [{show(c)}] given twice, as {out[c]} and {p}")
        out[c] = p
    if not out:
        raise ValueError("p0: no compositions")
    return out


def load_p0(path) -> dict[Composition, float]:
    """``p0_of`` of a JSON file."""
    return p0_of(json.loads(Path(path).read_text()))


def check_band(band) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 <= lo < hi <= 1`` (ValueError naming it otherwise)."""
    try:
        lo, hi = (float(x) for x in band)
    except (TypeError, ValueError):
        raise ValueError(f"band must be two numbers (lo, hi), got {band!r}") from None
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"band must satisfy 0 <= lo < hi <= 1, got ({lo:g}, {hi:g})")
    return lo, hi


# --- RL enrichment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InterfaceEnrichment:
    """One step's interface: witnessed by SFT, enrichable by RL, or why not."""

    step: int  # t
    interface: Interface  # I_t(c)
    status: str  # one of STATUSES
    sft_witnesses: int  # SFT compositions witnessing it
    rl_witnesses: int  # RL compositions witnessing it
    active: int  # ... of which lo < p0 < hi
    unreached: int  # ... of which p0 <= lo
    saturated: int  # ... of which p0 >= hi
    unmeasured: int  # ... of which no p0 was given
    via: Composition | None  # the RL witness reported (enrichable: max p0 (1 - p0))
    p0: float | None  # its p0
    why: str


@dataclass(frozen=True)
class Enrichment:
    """Can RL, from the SFT policy measured by p0, make one composition reachable?"""

    composition: Composition
    reachable: bool  # locally reachable from SFT + active RL: what RL is predicted to reach
    reachable_with_saturated: bool  # ... counting RL compositions the policy already solves as learned
    sft_reachable: bool  # locally reachable from SFT alone (RL not needed)
    seen: bool  # in SFT, or an active RL composition
    interfaces: tuple[InterfaceEnrichment, ...]  # one per step t = 1..L
    unidentified: tuple[str, ...]  # units not identified by SFT + active RL
    band: tuple[float, float]  # (lo, hi), exclusive
    why: str


def _classify(p: float | None, band) -> str:
    if p is None:
        return "unmeasured"
    return "unreached" if p <= band[0] else "saturated" if p >= band[1] else "enrichable"


def _fmt(p: float) -> str:
    return f"{p:.3g}"


def _interface_enrichment(t, iface, n_sft, rl_wit, p0, band) -> InterfaceEnrichment:
    """The status of one interface from its SFT count and its RL witnesses (with their p0)."""
    kinds = Counter(_classify(p0.get(c), band) for c in rl_wit)
    counts = (len(rl_wit), kinds["enrichable"], kinds["unreached"], kinds["saturated"], kinds["unmeasured"])
    name = show_interface(iface)
    if n_sft:
        return InterfaceEnrichment(t, iface, "sft", n_sft, *counts, None, None,
                                   f"step {t} {name}: witnessed in SFT ({n_sft} composition(s))")
    if not rl_wit:
        return InterfaceEnrichment(t, iface, "no witness", 0, *counts, None, None,
                                   f"step {t} {name}: not enrichable: no witness in SFT or RL")
    status = next(s for s in ("enrichable", "saturated", "unreached", "unmeasured") if kinds[s])
    group = [c for c in rl_wit if _classify(p0.get(c), band) == status]
    score = {"enrichable": lambda c: p0[c] * (1 - p0[c]), "saturated": p0.get, "unreached": p0.get}
    via = max(group, key=score[status]) if status in score else group[0]
    p, lo, hi = p0.get(via), *band
    if status == "enrichable":
        tail = f"enrichable via RL [{show(via)}] with p0 = {_fmt(p)} ({kinds['enrichable']} RL witness(es) in the band)"
    elif status == "saturated":
        tail = (f"not enrichable: p0 = {_fmt(p)} in RL [{show(via)}] (>= hi = {_fmt(hi)}: saturated, "
                f"the SFT policy already solves it)")
    elif status == "unreached":
        tail = f"not enrichable: p0 = {_fmt(p)} in RL [{show(via)}] (<= lo = {_fmt(lo)}: the policy never reaches it)"
    else:
        tail = f"not enrichable: p0 not measured for its {len(group)} RL witnesses, e.g. [{show(via)}]"
    others = {k: v for k, v in kinds.items() if k != status and v}
    if others and status != "enrichable":
        tail += "; other RL witnesses: " + ", ".join(f"{v} {k}" for k, v in others.items())
    return InterfaceEnrichment(t, iface, status, 0, *counts, via, p, f"step {t} {name}: {tail}")


def _enrichment_why(e_seen, sft_ok, ok, ok_sat, rows, unid) -> str:
    if sft_ok:
        return "locally reachable from SFT alone: RL is not needed"
    if e_seen:
        return "seen: an RL composition with p0 inside the band"
    bad = [r for r in rows if r.status not in ("sft", "enrichable")]
    if ok:
        new = [r for r in rows if r.status == "enrichable"]
        return "RL can make it reachable: " + "; ".join(r.why for r in new)
    parts = [r.why for r in bad]
    if unid:
        parts.append("not identified by SFT + active RL: " + ", ".join(unid))
    tail = "; counting saturated RL compositions as learned, it is reachable" if ok_sat else ""
    return "RL cannot make it reachable: " + "; ".join(parts) + tail


def _rl_compositions(rl, p0: dict, n: int, seed: int) -> list[Composition]:
    """The RL compositions: ``rl`` materialized plus the p0 keys it contains (all p0 keys without ``rl``)."""
    if rl is None:
        return list(p0)
    if isinstance(rl, dict):
        rl = Support.from_dict(rl)
    comps = compositions_of(rl, n, seed)
    member = rl.contains if isinstance(rl, Support) else set(comps).__contains__
    outside = [c for c in p0 if not member(c)]
    if outside:
        raise ValueError(f"p0 names {len(outside)} composition(s) outside the RL support, e.g. [{show(outside[0])}]")
    return list(dict.fromkeys([*comps, *p0]))


def _p0_dict(p0) -> dict[Composition, float]:
    """A dict keyed by compositions (validated), or JSON data read by ``p0_of``."""
    if isinstance(p0, dict) and p0 and all(isinstance(c, tuple) for c in p0):
        return {as_composition(c): _probability(v, f"[{show(as_composition(c))}]") for c, v in p0.items()}
    return p0_of(p0)


def _by_interface(comps: list[Composition]) -> dict[Interface, dict[int, list[Composition]]]:
    """interface -> step -> the compositions showing it there (each once per step)."""
    out = {}
    for c in comps:
        for t, iface in enumerate(local_interfaces(c), 1):
            at = out.setdefault(iface, {}).setdefault(t, [])
            if not at or at[-1] != c:
                at.append(c)
    return out


def _witnessing(index: dict, iface: Interface, t: int | None) -> list[Composition]:
    """The compositions witnessing ``iface`` (at step ``t`` when given), each once."""
    at = index.get(iface, {})
    if t is not None:
        return list(at.get(t, ()))
    return list(dict.fromkeys(c for step in sorted(at) for c in at[step]))


def enrichment(sft, rl, p0, targets, *, band=BAND, positional: bool = False, n: int = 3000,
               seed: int = 0) -> list[Enrichment]:
    """Per target: can RL on ``rl`` (with the SFT policy's ``p0``) make it reachable? See the module doc.

    ``sft``, ``rl``, ``targets``: lists of compositions or Supports (``rl=None``: the compositions
    ``p0`` measures); ``p0``: dict composition -> p0, or JSON data for ``p0_of``; ``band``: (lo, hi).
    """
    lo_hi = check_band(band)
    p0 = _p0_dict(p0)
    a = compositions_of(sft, n, seed)
    rl_comps = _rl_compositions(rl, p0, n, seed)
    tg = compositions_of(targets, n, seed)
    depth = max(len(c) for c in [*a, *rl_comps, *tg])
    active = [c for c in rl_comps if _classify(p0.get(c), lo_hi) == "enrichable"]
    solved = [c for c in rl_comps if _classify(p0.get(c), lo_hi) == "saturated"]
    kw = dict(positional=positional, max_depth=depth)
    on_sft = local_support(a, **kw)
    on_active = local_support(union(a, active) if active else a, **kw)
    on_solved = local_support(union(a, [*active, *solved]), **kw) if solved else on_active
    rl_index = _by_interface(rl_comps)
    out = []
    for c in tg:
        sft_r, act_r = on_sft.reach(c), on_active.reach(c)
        rows = tuple(
            _interface_enrichment(iw.step, iw.interface, iw.witnesses,
                                  _witnessing(rl_index, iw.interface, iw.step if positional else None), p0, lo_hi)
            for iw in sft_r.interfaces
        )
        seen = c in on_active.witnesses.compositions
        ok_sat = on_solved.reach(c).reachable
        why = _enrichment_why(seen and not sft_r.seen, sft_r.reachable, act_r.reachable, ok_sat, rows,
                              act_r.unidentified)
        out.append(Enrichment(c, act_r.reachable, ok_sat, sft_r.reachable, seen, rows, act_r.unidentified,
                              lo_hi, why))
    return out
