"""``python -m hlsm.identify``: the command line of ``cli.py``, bad input reported in one line."""

from hlsm.identify.cli import main

if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ValueError as err:  # bad input: one line naming it, not a traceback
        import sys

        print(f"python -m hlsm.identify: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
