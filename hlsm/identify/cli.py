"""The command line, ``python -m hlsm.identify SUPPORT.json ...`` (run by ``__main__.py``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hlsm.identify.local import LocalSupport, witnesses
from hlsm.identify.parse import INTERFACES, KINDS, compositions_of, load, show, union
from hlsm.identify.repairs import compare, repair
from hlsm.identify.report import format_certificate, format_enrichment, format_local, format_report, jsonable
from hlsm.identify.results import identify
from hlsm.identify.rl_enrichment import BAND, check_band, enrichment, load_p0
from hlsm.support import Split


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


def _parser() -> argparse.ArgumentParser:
    import hlsm.identify as package  # imported in full by now; the first line of its docstring says what this is
    from hlsm.cli import Parser

    ap = Parser(prog="python -m hlsm.identify", description=package.__doc__.split("\n")[0])
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
    ap.add_argument("--criterion", choices=CRITERIA, default="coverage",
                    help="target reachability: coverage (identified + interfaces covered), local (Theorem 3.4: "
                         "every parent-children interface has a local witness), or both")
    ap.add_argument("--p0", metavar="FILE", help="JSON p0 per RL composition (the SFT policy's success rate): "
                    "run the RL-enrichment check on the targets")
    ap.add_argument("--rl", nargs="+", default=None, metavar="NAME",
                    help="RL supports of the split, or one JSON file (default: the compositions --p0 measures)")
    ap.add_argument("--band", nargs=2, type=float, default=BAND, metavar=("LO", "HI"),
                    help="p0 band, exclusive: an RL composition with LO < p0 < HI can enrich (default: 0 1)")
    return ap


CRITERIA = ("coverage", "local", "both")


def _read_supports(args, obj, split):
    """The training compositions, their label in the report, and the target compositions."""
    n, seed = args.n, args.seed
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
    return train, source, targets


def _run_compare(args, split, targets, kw):
    """``--compare SFT RL``: two supports of the split input (None without the flag)."""
    if not args.compare:
        return None
    if split is None:
        raise ValueError("--compare names two supports of a Split input")
    a, b = (split.support(nm) for nm in args.compare)
    return compare(a, b, targets, n=args.n, seed=args.seed, **kw)


def _run_repairs(args, split, train, reached, kw):
    """``--repair K``: repairs of the first K unreachable targets, drawn from ``--pool``."""
    if not args.repair:
        return []
    if not args.pool:
        raise ValueError("--repair needs --pool (a split support name or a JSON file)")
    # a support of the split, unless a file of that name exists
    pool = (split.support(args.pool) if split is not None and not Path(args.pool).exists()
            else load(args.pool))
    pool = compositions_of(pool, args.n, args.seed)
    return [repair(train, r.composition, pool, max_add=args.max_add, exact=args.exact, **kw)
            for r in [r for r in reached if not r.reachable][: args.repair]]


def _read_p0(parser, args):
    """``--p0 FILE`` as a dict (None without it); bad input is one ``parser.error`` line naming it."""
    try:
        check_band(args.band)
    except ValueError as e:
        parser.error(f"--band: {e}")
    if not args.p0:
        if args.rl:
            parser.error(f"--rl {' '.join(args.rl)} needs --p0 (the SFT policy's p0 on the RL compositions)")
        return None
    return read_file(parser, f"--p0 {args.p0}", load_p0, args.p0)


def read_file(parser, what: str, read, path):
    """``read(path)``, or one ``parser.error`` line naming ``what`` and why it cannot be read."""
    try:
        return read(path)
    except OSError as e:
        parser.error(f"{what}: cannot read it ({e.strerror})")
    except json.JSONDecodeError as e:
        parser.error(f"{what}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})")
    except ValueError as e:
        parser.error(f"{what}: {e}")


def _rl_support(args, split, p0):
    """The RL compositions for ``--rl`` (None without it: the compositions p0 measures)."""
    if not args.rl:
        return None
    names = args.rl
    if split is not None and all(nm in split.train or nm in split.eval for nm in names):
        sups = [split.support(nm) for nm in names]
        outside = [c for c in p0 if not any(s.contains(c) for s in sups)]
        if outside:
            raise ValueError(f"p0 names {len(outside)} composition(s) outside --rl {' '.join(names)}, "
                             f"e.g. [{show(outside[0])}]")
        return list(dict.fromkeys([*union(*sups, n=args.n, seed=args.seed), *p0]))
    if len(names) == 1 and Path(names[0]).exists():
        return load(names[0])
    have = f"; supports: {sorted(split.train) + sorted(split.eval)}" if split is not None else ""
    raise ValueError(f"--rl {' '.join(names)}: neither supports of the split nor one JSON file{have}")


def _run_enrichment(parser, args, split, train, targets):
    """``--p0 FILE``: the RL-enrichment check of the targets (None without the flag)."""
    p0 = _read_p0(parser, args)
    if p0 is None:
        return None
    if not targets:
        parser.error("--p0 needs targets (--target NAME or --targets FILE)")
    try:
        rl = _rl_support(args, split, p0)
        return enrichment(train, rl, p0, targets, band=args.band, positional=args.positional, n=args.n,
                          seed=args.seed)
    except ValueError as e:
        parser.error(str(e))


def _text(ident, args, source, reached, comparison, repairs, local=None, enriched=None) -> str:
    """The report, then the certificates of the ``--witness`` units and, with ``--matrix``, the basis rows."""
    out = [format_report(ident, source, reached if args.criterion != "local" else (), comparison, repairs,
                         args.show)]
    if local is not None:
        out.append(format_local(local, args.show))
    if enriched is not None:
        out.append(format_enrichment(enriched, args.show))
    out += [format_certificate(ident.units[u]) for u in args.witness]
    if args.matrix:
        for kind in KINDS:
            m, labels = ident.matrix(kind, basis_only=True)
            cols = " ".join(ident._block(kind).units)
            out.append(f"== {kind} basis rows ({m.rows} x {m.cols}), columns: {cols}")
            out += [f"  {list(m.row(i))}  [{show(c)}]" for i, c in enumerate(labels)]
    return "\n".join(out)


def main(argv=None) -> int:
    """Check the support named in ``argv``: print the report, or its JSON with ``--json -``."""
    parser = _parser()
    args = parser.parse_args(argv)
    obj = read_file(parser, args.input, load, args.input)
    split = obj if isinstance(obj, Split) else None
    train, source, targets = _read_supports(args, obj, split)
    kw = dict(positional=args.positional, interface=args.interface)
    ident = identify(train, max_depth=max(len(c) for c in [*train, *targets]), **kw)
    reached = [ident.reach(c) for c in targets]
    local = None
    if args.criterion != "coverage" and targets:
        local_support = LocalSupport(witnesses(train), ident, args.positional)
        local = [local_support.reach(c) for c in targets]
    enriched = _run_enrichment(parser, args, split, train, targets)
    comparison = _run_compare(args, split, targets, kw)
    repairs = _run_repairs(args, split, train, reached, kw)
    for u in args.witness:
        if u not in ident.units:
            raise ValueError(f"unknown unit {u!r}; units: {', '.join(ident.units)}")
    text = _text(ident, args, source, reached, comparison, repairs, local, enriched)
    data = {
        "source": source,
        "identification": jsonable(ident),
        "targets": jsonable(reached) if args.criterion != "local" else None,
        "local": jsonable(local),
        "enrichment": jsonable(enriched),
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
