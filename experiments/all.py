"""Regenerate every figure that exists: ``python -m experiments.all [figure flags]``.

The flags (``--preset``, ``--seeds``, ``--splits``, ``--out``, ``--runs``, ``--workers``) go to every
figure; runs are shared through the cache, so later figures re-use what earlier ones trained.
"""

from __future__ import annotations

import importlib
import sys

FIGURES = ("protocol", "fig1", "fig4", "fig7", "fig8", "fig2", "fig3", "fig5", "fig6")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in FIGURES:
        print(f"== experiments.{name}", flush=True)
        rc = importlib.import_module(f"experiments.{name}").main(argv)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
