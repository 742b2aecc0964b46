"""Figure 3 (Finding 3, held-out routings): see experiments.heldout, which fig2 and fig3 share.

    python -m experiments.fig3 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0]
    python -m experiments.fig3 --condition compound_chunked ...   # in another regime condition
"""

from experiments import heldout


def main(argv=None) -> int:
    return heldout.main("fig3", argv)


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
