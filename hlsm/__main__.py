"""Command line: sample HLSM items to JSONL, build and save splits.

    python -m hlsm sample --depth 3 --n 10000 --out data.jsonl [--format values] [--seed 0]
    python -m hlsm sample --split split.json --support unseen --n 10000 --out unseen.jsonl
    python -m hlsm split compositional --depth 3 --out split.json      # prints the disjointness proof
    python -m hlsm split heldout --heldout sort_asc --out split.json

Rows are ``hlsm.export_jsonl``'s (prompt, completion, answer, trace, selections, ...). Every flag
is checked up front: a bad value exits with status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from hlsm.model import HLSM, export_jsonl
from hlsm.support import LeakageError
from hlsm.text import FORMATS


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


# the split factories' parameter annotations -> (argparse type, nargs)
_ARG_TYPES = {"int": (int, None), "str": (str, None), "bool": (_bool, None), "tuple[int, int]": (int, 2),
              "tuple[int, int] | None": (int, 2),
              "tuple[str, str]": (str, 2), "tuple[int, ...]": (int, "*"), "tuple[str, ...]": (str, "+")}


def _factories() -> dict:
    from hlsm.support import SPLIT_FACTORIES

    return SPLIT_FACTORIES


def _add_factory_args(p: argparse.ArgumentParser, factory) -> None:
    """One flag per parameter of a split factory, typed from its annotation, defaults shown."""
    doc = (factory.__doc__ or "").strip().split("\n")[0]
    p.description = doc
    for name, param in inspect.signature(factory).parameters.items():
        kind, nargs = _ARG_TYPES[param.annotation]
        required = param.default is inspect.Parameter.empty
        help_ = "required" if required else f"default: {_show(param.default)}"
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, nargs=nargs, required=required,
                       default=argparse.SUPPRESS, help=help_)


def _show(v) -> str:
    return " ".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _parser() -> argparse.ArgumentParser:
    from hlsm.cli import Parser

    p = Parser(prog="python -m hlsm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{sample,split}")

    s = sub.add_parser("sample", help="write seeded HLSM items as JSONL",
                       description="Write n seeded HLSM items as JSONL rows (hlsm.export_jsonl).")
    s.add_argument("--out", required=True, help="JSONL file to write")
    s.add_argument("--n", type=int, default=1000, help="number of items (default: 1000)")
    s.add_argument("--depth", type=int, default=None, help="composition depth without --split (default: 3)")
    s.add_argument("--split", default=None, help="a split JSON file (python -m hlsm split ... --out FILE)")
    s.add_argument("--support", default=None, help="the split's support to draw from, e.g. unseen")
    s.add_argument("--format", default="values", choices=FORMATS, help="trace format (default: values)")
    s.add_argument("--granularity", type=int, default=1, help="steps per shown trace chunk (default: 1)")
    s.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    s.add_argument("--stream", default=None, help="stream name (default: the split's stream for the support)")
    s.set_defaults(parser=s)

    sp = sub.add_parser("split", help="build a split, prove it leak-free, save it as JSON",
                        description="Build a split, print its disjointness proof and save it as JSON.")
    kinds = sp.add_subparsers(dest="factory", required=True, metavar="{" + ",".join(_factories()) + "}")
    for name, factory in _factories().items():
        k = kinds.add_parser(name, help=(factory.__doc__ or "").strip().split("\n")[0])
        k.add_argument("--out", required=True, help="JSON file to write")
        k.set_defaults(parser=k)
        _add_factory_args(k, factory)
    return p


def _sample(args) -> int:
    from hlsm.integrations import generator

    parser = args.parser

    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.depth is not None and args.depth < 1:
        parser.error(f"--depth must be >= 1, got {args.depth}")
    if args.split is None and args.support is not None:
        parser.error(f"--support {args.support} needs --split")
    if args.split is not None and args.support is None:
        parser.error("--split needs --support (the support to draw from)")
    if args.split is not None and args.depth is not None:
        parser.error(f"--depth {args.depth} cannot be combined with --split: the split's supports fix the depths")
    try:
        gen = generator(args.split, args.support, args.seed, args.format, args.granularity, args.stream,
                        depth=3 if args.depth is None else args.depth)
    except ValueError as e:
        parser.error(str(e))
    n = export_jsonl(gen, args.out, n=args.n)
    print(f"wrote {n} items of {_describe(gen)} to {args.out}")
    return 0


def _describe(gen: HLSM) -> str:
    return f"stream {gen.stream!r} seed {gen.seed} ({gen.support.describe()}, format {gen.fmt})"


def _split(args) -> int:
    factory, parser = _factories()[args.factory], args.parser
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
              if k not in ("command", "factory", "out", "parser")}
    try:
        split = factory(**kwargs)
        proof = split.check_disjoint()
    except (ValueError, LeakageError) as e:
        parser.error(str(e))
    for line in proof:
        print(line)
    split.save(args.out)
    print(f"wrote split {split.name!r} (train {sorted(split.train)}, eval {sorted(split.eval)}) to {args.out}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    return _sample(args) if args.command == "sample" else _split(args)


if __name__ == "__main__":
    sys.exit(main())
