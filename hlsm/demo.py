"""A two-minute tour: sample HLSM items, look at their latent selections, build a split, score.

    python -m hlsm.demo [--seed 0] [--n 3]
"""

from __future__ import annotations

import time

import hlsm
from hlsm.cli import Parser


def main(argv=None) -> None:
    ap = Parser(prog="python -m hlsm.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=3, help="items to show per format")
    args = ap.parse_args(argv)

    print(f"{len(hlsm.SKILLS)} skills, {len(hlsm.ROUTINGS)} routing mechanisms, e.g.")
    for name in ("reverse", "riffle", "atbash"):
        print(f"  skill   {hlsm.SKILLS[name].token} {name:12s} {hlsm.SKILLS[name].doc}")
    for name in ("chain", "concat", "map_halves"):
        print(f"  routing {hlsm.ROUTINGS[name].token:3s} {name:12s} {hlsm.ROUTINGS[name].doc}")

    for fmt in hlsm.FORMATS:
        print(f"\n== depth-3 items, '{fmt}' traces (prompt -> completion)")
        for ex in hlsm.HLSM(depth=3, seed=args.seed, fmt=fmt).sample(args.n):
            print(f"  {ex.prompt}  ->  {ex.completion}")
    ex = hlsm.HLSM(depth=3, seed=args.seed)[0]
    print(f"\n== the latent selections of item 0 (input {ex.x!r})")
    for s in ex.steps:
        print(f"  h{s.t} = {s.routing}({s.skill}) reading h{list(s.operands)} -> {s.value!r}  span {s.span}")
    print(f"  selection DAG edges: {sorted(ex.dag().edges)}")

    split = hlsm.compositional_split(depth=3, partition_seed=args.seed)
    print(f"\n== split {split.name}: train {sorted(split.train)}, eval {sorted(split.eval)}")
    for line in split.check_disjoint()[:4]:
        print("  " + line)
    print(f"  ... {len(split.train) * len(split.eval)} pairs proven disjoint")

    gold, wrong = ex.completion, ex.completion[:-1] + ("a" if ex.completion[-1] != "a" else "b")
    print(f"\n== verifiers on item 0: gold {gold!r}, corrupted {wrong!r}, garbage 'S99##;'")
    for name, fn in hlsm.REWARDS.items():
        scores = [fn(ex, c) for c in (gold, wrong, "S99##;")]
        print(f"  {name:9s} gold {scores[0]:.2f}  corrupted {scores[1]:.2f}  garbage {scores[2]:.2f}")

    gen = hlsm.HLSM(depth=3, seed=args.seed)
    t = time.perf_counter()
    gen.sample(50_000)
    rate = 50_000 / (time.perf_counter() - t)
    print(f"\n== sampled 50,000 depth-3 items at {rate:,.0f} items/s (one process)")


if __name__ == "__main__":
    main()
