"""Figure 2 (Finding 2, held-out skills): see experiments.heldout, which fig2 and fig3 share.

    python -m experiments.fig2 [--preset smoke|cpu] [--seeds 0 1 2] [--splits 0]
    python -m experiments.fig2 --condition compound_chunked ...   # in another regime condition
"""

from experiments import heldout


def main(argv=None) -> int:
    return heldout.main("fig2", argv)


if __name__ == "__main__":
    from experiments.report import run_cli

    raise SystemExit(run_cli(main))
