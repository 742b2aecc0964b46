"""The trainers' command line: one flag per config field, its help the field's comment.

    p = trainer_parser("python -m hlsm.sft", __doc__, SFTConfig, presets=SFT_PRESETS, choices={"fmt": FORMATS})
    args = p.parse_args(argv)
    cfg = build_config(p, lambda: SFTConfig.from_preset(...), args.out, args.resume)

Every flag shows its choices, its default (and what each preset sets it to) and one line of meaning
(the comment beside the field in the config class). Bad input never reaches training: a bad value,
an ``--out`` that already holds a run without ``--resume``, or an ``--init`` that is not a finished
run gets one line naming the flag, the value and what is allowed, exit status 2, no traceback,
nothing written. (Command-line plumbing only: no result depends on this file.)
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import tokenize
from dataclasses import MISSING, fields
from pathlib import Path

# torch CPU threads per process unless ``--threads`` says otherwise. One: these models are small, and
# torch's default (one thread per core) collapses when another job shares the cores -- probes.report
# took 198 s instead of 9 s beside a study. On an idle machine 2 threads train one run 1.45x faster
# (bench/unit.py's threads2 lever), so ``--threads 2`` is there to ask for; a study's parallel
# single-thread workers beat it (1.94x).
THREADS = 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: ...``, exit status 2), no usage block,
    and whose ``--threads`` (``add_threads``) takes effect as it is parsed."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        if getattr(ns, "threads", 0):
            import torch

            torch.set_num_threads(ns.threads)
        return ns


def non_negative(text: str) -> int:
    """An argparse type: a whole number >= 0, or a one-line error naming the value."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 0")
    return n


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N`` (default ``THREADS``; 0: torch's default, one per core) on a ``Parser``."""
    p.add_argument("--threads", type=non_negative, default=THREADS,
                   help=f"torch CPU threads (default {THREADS}: never collapses when other jobs share the "
                        "cores; 2 trains one run ~1.45x faster on an idle machine; 0: torch's default)")


def field_comments(config_cls) -> dict[str, str]:
    """field name -> the ``# comment`` on the line that defines it in ``config_cls``'s source."""
    src = inspect.getsource(config_cls)
    names = {f.name for f in fields(config_cls)}
    out, line_name = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names:
            line_name[tok.start[0]] = tok.string  # a field definition starts at the class body's indent
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_name:
            out[line_name[tok.start[0]]] = tok.string.lstrip("#").strip()
    return out


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def _show(v) -> str:
    return json.dumps(list(v) if isinstance(v, tuple) else v) if isinstance(v, (dict, list, tuple)) else repr(v)


def trainer_parser(prog: str, doc: str, config_cls, presets: dict, choices: dict | None = None,
                   skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """``--out``, ``--resume``, ``--no-progress``, ``--threads`` and one flag per field of ``config_cls``."""
    p = Parser(prog=prog, description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=f"presets: {', '.join(presets)}; a flag given wins over its preset's value")
    p.add_argument("--out", required=True, help="run directory (must not hold a run unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-eval lines")
    add_threads(p)
    comments, choices = field_comments(config_cls), dict(choices or {})
    for f in fields(config_cls):
        if f.name in skip:
            continue
        flag, default = "--" + f.name.replace("_", "-"), _default(f)
        set_by = {name: pr[f.name] for name, pr in presets.items() if f.name in pr}
        tail = f"default {_show(default)}" + (
            "; " + ", ".join(f"{n}: {_show(v)}" for n, v in set_by.items()) if set_by else "")
        help_ = f"{comments.get(f.name, '')} [{tail}]".replace("%", "%%")
        kw = dict(default=None, help=help_)
        if f.name in choices:
            kw["choices"] = list(choices[f.name])
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif f.type in ("int", "float", "str"):
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], **kw)
        else:
            p.add_argument(flag, type=_json(tuple if f.type == "tuple" else None), metavar="JSON", **kw)
    return p


def _json(as_tuple=None):
    """A flag's JSON parser; a tuple field's JSON list becomes a tuple, as its config expects."""

    def parse(text: str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
        return as_tuple(value) if as_tuple and isinstance(value, list) else value
    parse.__name__ = "JSON"
    return parse


def given_config(args, config_cls) -> dict:
    """The config fields set on the command line (flags left at None are not given)."""
    return {f.name: getattr(args, f.name) for f in fields(config_cls)
            if getattr(args, f.name, None) is not None}


def check_init(init: str, required: bool) -> None:
    """``--init`` names a finished SFT run (a GRPO run's config has no split of its own to start from)."""
    from hlsm.checkpoint import CONFIG, POLICY, read_config

    if not init:
        if required:
            raise ValueError("--init: required, the SFT run directory to start from (e.g. one made by python -m "
                             "hlsm.sft)")
        return
    run = Path(init)
    if not (run / CONFIG).exists():
        raise ValueError(f"--init {init}: not a run directory (no {CONFIG}); give an SFT run directory")
    if not (run / POLICY).exists():
        raise ValueError(f"--init {init}: not a finished run (no {POLICY}); finish it with --resume first")
    if "split" not in read_config(run):
        raise ValueError(f"--init {init}: a GRPO run; start from an SFT run (its config holds the split)")


def build_config(parser: argparse.ArgumentParser, make, out: str, resume: bool, init_required: bool = False,
                 check=None):
    """``make()``'s config, checked before anything is written: its ``validate()``, its device, its
    ``init`` (``check_init``), the trainer's own ``check(cfg)`` and ``--out`` (no run there unless
    ``--resume``). Any failure (a ValueError) is one ``parser.error`` line (exit status 2)."""
    from hlsm.distributed import resolve_device

    try:
        cfg = make()
        cfg.validate()
        resolve_device(cfg.device)
        check_init(cfg.init, init_required)
        if check:
            check(cfg)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    from hlsm.checkpoint import CONFIG

    if not resume and (Path(out) / CONFIG).exists():
        parser.error(f"--out {out}: already holds a run; pass --resume to continue it, or choose an empty --out")
    return cfg
