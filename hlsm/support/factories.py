"""The splits the paper varies, and ``make_split``, which builds one from a config spec.

``compositional_split`` cuts one depth's composition buckets into SFT / RL / held-out ranges;
``heldout_split`` keeps named skills or routings out of SFT. Both give training streams the
``TRAIN_INPUTS`` input buckets and evaluation streams ``EVAL_INPUTS``, so no evaluation item can
repeat a training item whatever the compositions.
"""

from __future__ import annotations

from hlsm.modules import ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS, check_routings, check_skills
from hlsm.names import (
    ATOMS,
    DEEPER,
    EVAL_ATOMS,
    EVAL_HELDOUT_ATOMS,
    HELDOUT_ATOMS,
    RL,
    RL_ATOMS,
    RL_COMPOSED,
    RL_INSIDE,
    RL_PROMPTS,
    RL_SHALLOW,
    SEEN,
    SEPARATE,
    SFT,
    SFT_MISSING,
    SWAPPED,
    UNSEEN,
    UNSEEN_COVERED,
    UNSEEN_MISSING,
    VALIDATION,
)
from hlsm.rng import N_BUCKETS
from hlsm.support.set import Support
from hlsm.support.split import Split, name_tuple


def _check_ranges(**ranges: tuple[int, int]) -> None:
    """Composition bucket ranges [lo, hi) that a split keeps apart: valid and pairwise disjoint."""
    for name, r in ranges.items():
        try:
            lo, hi = (int(v) for v in r)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a bucket range (lo, hi), got {r!r}") from None
        if not 0 <= lo < hi <= N_BUCKETS:
            raise ValueError(f"{name} must satisfy 0 <= lo < hi <= {N_BUCKETS}, got {tuple(r)!r}")
    items = list(ranges.items())
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1 :]:
            if ra[0] < rb[1] and rb[0] < ra[1]:
                raise ValueError(
                    f"bucket ranges {a}={tuple(ra)!r} and {b}={tuple(rb)!r} overlap; they must be "
                    f"disjoint (their compositions would be shared)"
                )


def _check_deeper(deeper: tuple[int, ...], depth: int) -> None:
    if deeper and min(deeper) <= depth:
        raise ValueError(f"deeper depths must exceed depth={depth}, got {deeper!r}")


def _sft_depths(sft_depths: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """The depths SFT shows (default ``(depth,)``): ``depth`` itself and shallower ones only."""
    sft_depths = tuple(sft_depths) or (depth,)
    if depth not in sft_depths or any(not 1 <= d <= depth for d in sft_depths):
        raise ValueError(f"sft_depths must include depth={depth} and lie in 1..{depth}, got {sft_depths!r}")
    return sft_depths


def _kept_modules(heldout: tuple[str, ...], skills: tuple[str, ...], routings: tuple[str, ...],
                  field: str = "heldout"):
    """(the skills, the routings) SFT keeps once ``heldout`` (skills only or routings only, each in
    the inventory) is taken out; ValueError (naming ``field``) if it leaves none of its kind."""
    unknown = [h for h in heldout if h not in SKILLS and h not in ROUTINGS]
    if unknown:
        raise ValueError(f"{field}: unknown module {unknown[0]!r}; allowed: a skill ({', '.join(SKILLS)}) "
                         f"or a routing ({', '.join(ROUTINGS)})")
    is_skill = [h in SKILLS for h in heldout]
    if not heldout or not (all(is_skill) or not any(is_skill)):
        raise ValueError(f"{field} must name skills only or routings only, got {heldout!r}")
    if not all(is_skill):
        check_routings(heldout)
    inventory = skills if all(is_skill) else routings
    missing = [h for h in heldout if h not in inventory]
    if missing:
        raise ValueError(f"{field} {missing!r} not in the inventory {inventory!r}")
    kept_skills = tuple(s for s in skills if s not in heldout)
    kept_routings = tuple(r for r in routings if r not in heldout)
    if not kept_skills or not kept_routings:
        raise ValueError(f"{field} {heldout!r} leaves no module of its kind for SFT")
    return kept_skills, kept_routings


TRAIN_INPUTS = (0, 800)  # input hash buckets used by training streams
EVAL_INPUTS = (800, N_BUCKETS)  # ... and by evaluation streams: no eval item repeats a train item


def compositional_split(
    depth: int = 3,
    sft: tuple[int, int] = (0, 500),
    rl: tuple[int, int] = (500, 750),
    heldout: tuple[int, int] = (750, N_BUCKETS),
    deeper: tuple[int, ...] = (4, 5, 6),
    skills: tuple[str, ...] = SKILL_NAMES,
    routings: tuple[str, ...] = ROUTING_NAMES,
    partition_seed: int = 0,
    input_len: tuple[int, int] = (4, 6),
    alphabet: str = "abcdef",
    sft_depths: tuple[int, ...] = (),
    sft_missing: tuple[str, ...] = (),
    validation: tuple[int, int] | None = None,
) -> Split:
    """Seen vs unseen compositions at L = depth, RL inside vs beyond SFT, atoms vs compounds.

    Composition buckets at ``depth`` are cut into SFT (seen), RL (unseen by SFT) and held-out
    (unseen by both) ranges. Training supports: ``sft`` (compounds at ``depth``), ``atoms`` (every
    module at L = 1), ``rl`` (compounds beyond the SFT support), ``rl_inside`` (RL on the SFT
    compositions), ``rl_atoms`` (RL on atoms only). Evaluation supports: ``seen`` (SFT
    compositions, fresh inputs), ``rl_prompts`` (RL compositions, fresh inputs), ``unseen``
    (held-out compositions), ``deeper`` (depths > ``depth``), ``eval_atoms`` (L = 1, fresh inputs).
    The three composition ranges must be disjoint (RL is "beyond the SFT support"). ``sft_depths``
    (default: ``(depth,)``) lets SFT also show shallower compounds of its bucket range, e.g.
    (1, 2, 3); RL, ``seen`` and ``unseen`` stay at L = depth. ``sft_missing`` names skills (or
    routings) for SFT to miss (Finding 4, bottom): it adds the training support ``sft_missing`` (the
    ``sft`` support less every composition that uses one of them, so they never appear, not even as
    atoms) and the evaluation supports ``unseen_missing`` / ``unseen_covered`` (the ``unseen``
    compositions that use one of them / none); every other support is unchanged, item for item.
    ``validation`` (a fourth bucket range, disjoint from the other three) adds the evaluation support
    ``validation``: compositions at L = depth that no training support holds and that ``unseen`` does
    not hold either, so hyperparameters chosen on it are never chosen on the test compositions.
    """
    _check_deeper(deeper, depth)
    _check_ranges(sft=sft, rl=rl, heldout=heldout, **({"validation": validation} if validation else {}))
    sft_depths = _sft_depths(sft_depths, depth)
    sft_missing = name_tuple(sft_missing, "sft_missing")
    common = dict(
        skills=tuple(skills),
        routings=tuple(routings),
        partition_seed=partition_seed,
        input_len=tuple(input_len),
        alphabet=alphabet,
    )
    train_in = dict(common, input_buckets=TRAIN_INPUTS)
    eval_in = dict(common, input_buckets=EVAL_INPUTS)
    train = {
        SFT: Support(depths=sft_depths, buckets=sft, **train_in),
        ATOMS: Support(depths=(1,), **train_in),
        RL: Support(depths=(depth,), buckets=rl, **train_in),
        RL_INSIDE: Support(depths=(depth,), buckets=sft, **train_in),
        RL_ATOMS: Support(depths=(1,), **train_in),
    }
    evals = {
        SEEN: Support(depths=(depth,), buckets=sft, **eval_in),
        RL_PROMPTS: Support(depths=(depth,), buckets=rl, **eval_in),
        UNSEEN: Support(depths=(depth,), buckets=heldout, **eval_in),
        EVAL_ATOMS: Support(depths=(1,), **eval_in),
    }
    if deeper:
        evals[DEEPER] = Support(depths=tuple(deeper), **eval_in)
    if validation:
        evals[VALIDATION] = Support(depths=(depth,), buckets=tuple(validation), **eval_in)
    if sft_missing:
        kept_skills, kept_routings = _kept_modules(sft_missing, tuple(skills), tuple(routings), "sft_missing")
        kept = dict(skills=kept_skills, routings=kept_routings)
        train[SFT_MISSING] = Support(depths=sft_depths, buckets=sft, **{**train_in, **kept})
        evals[UNSEEN_MISSING] = Support(depths=(depth,), buckets=heldout, require=sft_missing, **eval_in)
        evals[UNSEEN_COVERED] = Support(depths=(depth,), buckets=heldout, **{**eval_in, **kept})
    return Split(
        name=f"compositional-L{depth}-p{partition_seed}" + (f"-missing-{'-'.join(sft_missing)}" if sft_missing else ""),
        train=train,
        eval=evals,
        unseen=(UNSEEN, *((UNSEEN_MISSING, UNSEEN_COVERED) if sft_missing else ()),
                *((VALIDATION,) if validation else ())),
        description=compositional_split.__doc__.split("\n")[0],
    )


def heldout_split(
    heldout: tuple[str, ...],
    depth: int = 3,
    rl: tuple[int, int] = (0, 500),
    test: tuple[int, int] = (500, N_BUCKETS),
    skills: tuple[str, ...] = SKILL_NAMES,
    routings: tuple[str, ...] = ROUTING_NAMES,
    partition_seed: int = 0,
    input_len: tuple[int, int] = (4, 6),
    alphabet: str = "abcdef",
    sft: tuple[int, int] = (0, N_BUCKETS),
    sft_depths: tuple[int, ...] = (),
    deeper: tuple[int, ...] = (),
    shallow: int = 0,
) -> Split:
    """Skills or routings held out of SFT, then reintroduced in RL as atoms or in compositions.

    ``heldout`` names skills or routings (not both) from the inventory ``skills`` x ``routings``.
    The SFT compositions (``sft``: the ``sft`` bucket range of the compositions of the kept modules,
    at the ``sft_depths``, default ``(depth,)``) and ``atoms`` never use them. RL reintroduces them
    either as atoms (``rl_atoms``: L = 1 items using a held-out module) or inside compositions
    (``rl_composed``: compounds using one, from the ``rl`` bucket range; with ``shallow`` > 0 also
    ``rl_shallow``, the same at L = ``shallow`` < depth). ``heldout_atoms`` is the same set as
    ``rl_atoms``, named for use as SFT data: a from-scratch policy that never saw a module cannot be
    rewarded for it (p0 = 0), so fig2/fig3 let SFT teach the module in isolation and ask whether RL
    makes it composable. Evaluation: ``unseen`` compounds using a held-out module from the ``test``
    bucket range (never in any training support), ``deeper`` (the same at the ``deeper`` depths, if
    any), ``rl_prompts`` (the ``rl_composed`` compositions on fresh inputs),
    ``eval_heldout_atoms`` (fresh inputs) and ``seen`` (SFT compositions at ``depth``, fresh inputs:
    forgetting).
    """
    # one function: half of it is signature and docstring; the rest, the checks then the supports the
    # docstring names, reads top to bottom beside it (the module checks are _kept_modules)
    heldout = name_tuple(heldout, "heldout")
    _check_ranges(rl=rl, test=test)
    _check_ranges(sft=sft)  # of the kept modules' compositions: no overlap with rl / test possible
    sft_depths = _sft_depths(sft_depths, depth)
    _check_deeper(deeper, depth)
    if shallow and not 1 < shallow < depth:
        raise ValueError(f"shallow must be 0 (none) or a depth in 2..{depth - 1}, got {shallow!r}")
    skills, routings = check_skills(skills), check_routings(routings)
    kept_skills, kept_routings = _kept_modules(heldout, skills, routings)
    common = dict(partition_seed=partition_seed, input_len=tuple(input_len), alphabet=alphabet)
    train_in = dict(common, input_buckets=TRAIN_INPUTS)
    eval_in = dict(common, input_buckets=EVAL_INPUTS)
    kept = dict(skills=kept_skills, routings=kept_routings)
    full = dict(skills=skills, routings=routings, require=heldout)
    train = {
        SFT: Support(depths=sft_depths, buckets=sft, **kept, **train_in),
        ATOMS: Support(depths=(1,), **kept, **train_in),
        HELDOUT_ATOMS: Support(depths=(1,), **full, **train_in),
        RL_ATOMS: Support(depths=(1,), **full, **train_in),
        RL_COMPOSED: Support(depths=(depth,), buckets=rl, **full, **train_in),
    }
    if shallow:
        train[RL_SHALLOW] = Support(depths=(shallow,), buckets=rl, **full, **train_in)
    evals = {
        UNSEEN: Support(depths=(depth,), buckets=test, **full, **eval_in),
        RL_PROMPTS: Support(depths=(depth,), buckets=rl, **full, **eval_in),
        EVAL_HELDOUT_ATOMS: Support(depths=(1,), **full, **eval_in),
        SEEN: Support(depths=(depth,), buckets=sft, **kept, **eval_in),
    }
    if deeper:
        evals[DEEPER] = Support(depths=tuple(deeper), buckets=test, **full, **eval_in)
    return Split(
        name=f"heldout-{'-'.join(heldout)}-L{depth}-p{partition_seed}",
        train=train,
        eval=evals,
        unseen=(UNSEEN, DEEPER) if deeper else (UNSEEN,),
        description=heldout_split.__doc__.split("\n")[0],
    )


def planted_split(
    pair: tuple[str, str] = ("rotate_left", "reverse"),
    others: tuple[str, ...] = ("swap_pairs", "shift_up", "atbash", "swap_halves"),
    together: bool = True,
    routing: str = "chain",
    partition_seed: int = 0,
    input_len: tuple[int, int] = (4, 6),
    alphabet: str = "abcdef",
) -> Split:
    """A planted identification test: two skills that SFT only ever shows together, or its twin.

    Every SFT composition chains ``routing`` steps. The SFT support holds every atom, L = 2 and
    L = 3 chain of the ``others`` and 1 + 2k compositions using the ``pair`` (a, b) (k = len(others)):
    (a, b) and (a, b, x) for every other x, then with ``together`` (x, a, b) for every x, so a and b
    only ever appear side by side, a first (their effects are confounded: ``hlsm.identify`` finds
    neither identified), and otherwise (the identifiable twin, the same number of compositions)
    (x, a, x') for the first half of the others and (x, b, x') for the rest, x' the next other.
    Evaluation: ``seen`` (the SFT compositions, fresh inputs), ``separate`` (the 4k L = 2 chains
    that use a or b beside another skill: (a, x), (x, a), (b, x), (x, b); no SFT composition) and
    ``swapped`` ((b, a)).
    """
    pair, others = tuple(pair), tuple(others)
    if len(pair) != 2 or len(set(pair + others)) != len(pair + others) or len(others) < 2:
        raise ValueError(f"planted_split needs two distinct pair skills and >= 2 other skills, none repeated; "
                         f"got pair={pair!r}, others={others!r}")
    check_skills(pair + others)
    check_routings((routing,))
    a, b = pair
    c = lambda *skills: tuple((routing, s) for s in skills)
    nxt = {x: others[(i + 1) % len(others)] for i, x in enumerate(others)}
    half = len(others) // 2
    base = [c(x) for x in others] + [c(x, y) for x in others for y in others]
    base += [c(x, y, z) for x in others for y in others for z in others]
    with_pair = [c(a, b)] + [c(a, b, x) for x in others]
    with_pair += ([c(x, a, b) for x in others] if together else
                  [c(x, a, nxt[x]) for x in others[:half]] + [c(x, b, nxt[x]) for x in others[half:]])
    separate = [c(s, x) for s in pair for x in others] + [c(x, s) for s in pair for x in others]
    common = dict(skills=pair + others, routings=(routing,), partition_seed=partition_seed,
                  input_len=tuple(input_len), alphabet=alphabet)
    sup = lambda comps, inputs: Support(depths=tuple(sorted({len(x) for x in comps})), compositions=tuple(comps),
                                        input_buckets=inputs, **common)
    sft = base + with_pair
    return Split(
        name=f"planted-{'together' if together else 'apart'}-{a}-{b}-p{partition_seed}",
        train={SFT: sup(sft, TRAIN_INPUTS)},
        eval={SEEN: sup(sft, EVAL_INPUTS), SEPARATE: sup(separate, EVAL_INPUTS), SWAPPED: sup([c(b, a)], EVAL_INPUTS)},
        unseen=(SEPARATE, SWAPPED),
        description=planted_split.__doc__.split("\n")[0],
    )


SPLIT_FACTORIES = {"compositional": compositional_split, "heldout": heldout_split, "planted": planted_split}

# The prototype task (docs/design.md §prototype), the default split spec of SFTConfig: 8
# length-preserving skills, chain routing, depth-2 compositions split into SFT / RL / held-out
# buckets, depth 3 as the deeper evaluation.
DEFAULT_SPLIT = {
    "factory": "compositional",
    "depth": 2,
    "skills": ["reverse", "rotate_left", "rotate_right", "swap_pairs", "swap_halves", "shift_up",
               "shift_down", "atbash"],
    "routings": ["chain"],
    "deeper": [3],
}


def make_split(spec, field: str = "split") -> Split:
    """A Split from a Split, a ``Split.to_dict()`` dict, or ``{"factory": name, **kwargs}``.

    ``field`` names the config field in error messages (e.g. "SFTConfig.split").
    """
    if isinstance(spec, Split):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(f"{field} must be a Split or a dict, got {type(spec).__name__}")
    if "train" in spec:
        return Split.from_dict(spec)
    factory = spec.get("factory")
    if factory not in SPLIT_FACTORIES:
        raise ValueError(f"{field}: unknown factory {factory!r}; allowed: {', '.join(SPLIT_FACTORIES)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "factory"}
    try:
        return SPLIT_FACTORIES[factory](**kwargs)
    except TypeError as e:
        raise ValueError(f"{field}: bad arguments for {factory}: {e}") from None
