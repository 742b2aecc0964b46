"""Supports and splits: which modules, compositions, depths and inputs each data stream holds.

A *composition* is the latent selection cascade of one item, written as a tuple of
``(routing, skill)`` name pairs, one per step. A ``Support`` is the set of items (input string,
composition) a stream may contain. Compositions and inputs are partitioned by a stable hash into
``N_BUCKETS`` buckets, so a split can give SFT, RL and evaluation disjoint bucket ranges of the
same composition space without enumerating it (depth 3 over the full inventory has 240^3 = 13.8M
compositions); small supports can instead list their compositions explicitly.

A ``Split`` names the training supports (``sft``, ``rl``, ...) and evaluation supports (``seen``,
``unseen``, ``deeper``, ...) of one experiment, and ``Split.check_disjoint`` proves that no
evaluation item can occur in training and that no "unseen" evaluation composition does.

One file per idea, in reading order:

    composition.py  Composition, the integer step codes (code, decode, N_CODES), as_composition
    set.py          Support: definition, validation, membership, enumeration, JSON (ENUMERATE_LIMIT)
    sampling.py     the vectorized rejection-sampling draws behind Support.draw_* (MAX_ATTEMPTS)
    proofs.py       compositions_disjoint, inputs_disjoint, items_disjoint, is_inside, LeakageError
    split.py        Split: named train and eval supports, check_disjoint, JSON
    factories.py    compositional_split, heldout_split, planted_split, TRAIN_INPUTS / EVAL_INPUTS, make_split,
                    SPLIT_FACTORIES, DEFAULT_SPLIT

Every public name is re-exported here: import from ``hlsm.support``, not from the files.
"""

from hlsm.rng import N_BUCKETS
from hlsm.support.composition import N_CODES, Composition, as_composition, code, decode
from hlsm.support.factories import (
    DEFAULT_SPLIT,
    EVAL_INPUTS,
    SPLIT_FACTORIES,
    TRAIN_INPUTS,
    compositional_split,
    heldout_split,
    make_split,
    planted_split,
)
from hlsm.support.proofs import LeakageError, compositions_disjoint, inputs_disjoint, is_inside, items_disjoint
from hlsm.support.sampling import MAX_ATTEMPTS
from hlsm.support.set import ENUMERATE_LIMIT, Support
from hlsm.support.split import Split

__all__ = [
    "DEFAULT_SPLIT", "ENUMERATE_LIMIT", "EVAL_INPUTS", "MAX_ATTEMPTS", "N_BUCKETS", "N_CODES",
    "SPLIT_FACTORIES", "TRAIN_INPUTS", "Composition", "LeakageError", "Split", "Support",
    "as_composition", "code", "compositional_split", "compositions_disjoint", "decode", "heldout_split",
    "inputs_disjoint", "is_inside", "items_disjoint", "make_split", "planted_split",
]
