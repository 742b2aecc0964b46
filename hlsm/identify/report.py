"""The results for people (``format_report``, ``format_certificate``, ``format_local``,
``format_enrichment``) and for scripts (``jsonable``)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from fractions import Fraction

from hlsm.identify.algebra import UnitReport
from hlsm.identify.local import LocalReachability
from hlsm.identify.parse import INTERFACE_DOC, KINDS, show
from hlsm.identify.repairs import Comparison, Repair
from hlsm.identify.results import Identification, Reachability
from hlsm.identify.rl_enrichment import STATUSES, Enrichment


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
    """One unit's verdict with its witness: the certificate's rows, or the confounder."""
    if r.identified:
        terms = [f"  {y!s:>6} * [{show(c)}]" for c, y in r.certificate]
        return f"{r.unit} = sum of these rows ({r.kind} counts), y . A = e_{r.unit}:\n" + "\n".join(terms)
    terms = " ".join(f"{x:+d}*{u}" for u, x in r.confounder)
    return f"{r.unit} not identified: A v = 0 for v = {terms} (shift the effects by v: no trace changes)"


def format_report(ident: Identification, source: str = "", targets=(), comparison=None, repairs=(),
                  show_n: int = 8) -> str:
    """A readable report of an identification, target reachability, a comparison, repairs."""
    out = _support(ident, source) + _algebraic(ident, show_n) + _graph(ident)
    if targets:
        out += _targets(targets, show_n)
    if comparison is not None:
        out += _comparison(comparison)
    for rp in repairs:
        out += _repair(rp)
    return "\n".join(out)


def _support(ident: Identification, source: str) -> list[str]:
    units_word = "(module, position) units" if ident.positional else "tied module units"
    return [
        "== support",
        f"  {ident.n_compositions} distinct compositions, depths {list(ident.depths)}"
        + (f"; {source}" if source else ""),
        f"  model: split observation (routing and skill totals), {units_word}; "
        f"interface = {INTERFACE_DOC[ident.interface]} along each data edge",
    ]


def _algebraic(ident: Identification, show_n: int) -> list[str]:
    """Per kind rank and failures, then confounders of the failures and witnesses of the successes."""
    out = ["== algebraic (exact over QQ): unit identified iff e_unit is in the row space"]
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
    return out


def _graph(ident: Identification) -> list[str]:
    out = [
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
    return out


def _targets(targets: list[Reachability], show_n: int) -> list[str]:
    ok = sum(r.reachable for r in targets)
    seen = sum(r.seen for r in targets)
    fail_id = sum(bool(r.unidentified) and not r.reachable for r in targets)
    fail_if = sum(bool(r.uncovered) and not r.reachable for r in targets)
    out = [
        "== targets",
        f"  reachable {ok} / {len(targets)} (seen {seen}); not reachable because a unit is not "
        f"identified: {fail_id}, because an interface is not covered: {fail_if}",
    ]
    bad = [r for r in targets if not r.reachable][:show_n]
    for r in bad:
        out.append(f"  [{show(r.composition)}] {r.why}")
    if len(bad) < len(targets) - ok:
        out.append(f"  ... {len(targets) - ok - len(bad)} more not reachable")
    return out


def _comparison(c: Comparison) -> list[str]:
    out = [
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
    return out


def _repair(rp: Repair) -> list[str]:
    out = [f"== repair [{show(rp.target)}] ({rp.method}, {rp.searched} evaluated)"]
    if rp.found:
        out.append(f"  add {len(rp.added)}: " + "; ".join(f"[{show(c)}]" for c in rp.added))
    else:
        out.append(f"  no fix within the pool and max-add; best effort added {len(rp.added)}; "
                   f"still: {rp.after.why}")
    return out


def _examples(results, show_n: int) -> list[str]:
    """Up to ``show_n`` failing results, then up to ``show_n`` succeeding ones, each with its reasons."""
    bad = [r for r in results if not r.reachable]
    good = [r for r in results if r.reachable]
    out = [f"  [{show(r.composition)}] {r.why}" for r in bad[:show_n]]
    if len(bad) > show_n:
        out.append(f"  ... {len(bad) - show_n} more not reachable")
    out += [f"  [{show(r.composition)}] {r.why}" for r in good[:show_n]]
    if len(good) > show_n:
        out.append(f"  ... {len(good) - show_n} more reachable")
    return out


def format_local(results: list[LocalReachability], show_n: int = 8) -> str:
    """The local criterion (Theorem 3.4) on the targets: counts, then examples with their reasons."""
    if not results:
        return "== targets, local criterion: no targets"
    where = "at the same step (positional)" if results[0].positional else "at any step (tied)"
    ok = sum(r.reachable for r in results)
    no_wit = sum(bool(r.missing) and not r.reachable for r in results)
    no_id = sum(bool(r.unidentified) and not r.reachable for r in results)
    mean = sum(r.score for r in results) / len(results)
    out = [
        f"== targets, local criterion (Theorem 3.4): every step's parent-children interface has a local "
        f"witness {where}, every unit identified",
        f"  locally reachable {ok} / {len(results)} (seen {sum(r.seen for r in results)}); not reachable "
        f"because an interface has no witness: {no_wit}, because a unit is not identified: {no_id}; "
        f"mean score {mean:.3f}",
    ]
    return "\n".join(out + _examples(results, show_n))


def format_enrichment(results: list[Enrichment], show_n: int = 8) -> str:
    """The RL-enrichment check on the targets: counts, interface statuses, examples with reasons."""
    if not results:
        return "== RL enrichment: no targets"
    lo, hi = results[0].band
    n = len(results)
    status = {s: sum(r.status == s for e in results for r in e.interfaces) for s in STATUSES}
    out = [
        f"== RL enrichment: an interface not in SFT is enrichable iff an RL composition with {lo:g} < p0 < {hi:g} "
        f"witnesses it",
        f"  targets reachable from SFT alone {sum(e.sft_reachable for e in results)} / {n}; predicted "
        f"reachable after RL {sum(e.reachable for e in results)} / {n} (counting saturated RL compositions "
        f"as learned: {sum(e.reachable_with_saturated for e in results)} / {n})",
        "  target interfaces (steps): " + ", ".join(f"{s} {k}" for s, k in status.items()),
    ]
    return "\n".join(out + _examples(results, show_n))
