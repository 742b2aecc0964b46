"""Every support and stream name the toolkit uses, in one place.

Support names are keys of a ``Split``'s ``train`` and ``eval`` dicts. No name is both a training
and an evaluation support (``Split`` refuses one), so ``split.support(name)`` can never hand an
evaluator a training support by mistake: evaluation supports of L = 1 atoms are ``EVAL_ATOMS`` and
``EVAL_HELDOUT_ATOMS``, never ``ATOMS``.

Stream names seed the counter-based item draws (``HLSM(stream=...)``). Every trainer that draws
from training support ``s`` uses ``train_stream(s)``: SFT, GRPO's prompts and GRPO's replay alike,
so continued SFT on support ``s`` with batch size P sees at step k exactly the P prompts GRPO on
``s`` samples at step k (the labelled control of ``experiments``). Evaluation draws from
``eval_stream(s)``.
"""

from __future__ import annotations

# --- training supports (what SFT and GRPO may draw from) -----------------------------------
SFT = "sft"  # compounds at L_train: the SFT support
ATOMS = "atoms"  # every kept module at L = 1
RL = "rl"  # compounds beyond the SFT support (compositional_split)
RL_INSIDE = "rl_inside"  # RL on the SFT compositions
RL_ATOMS = "rl_atoms"  # RL on L = 1 atoms
RL_COMPOSED = "rl_composed"  # RL on compounds that use a held-out module (heldout_split)
RL_SHALLOW = "rl_shallow"  # ... the same at a shallower depth (heldout_split ``shallow``)
HELDOUT_ATOMS = "heldout_atoms"  # the held-out modules as L = 1 atoms, for SFT (heldout_split)
SFT_MISSING = "sft_missing"  # the SFT support without the ``sft_missing`` modules (compositional_split)

# --- evaluation supports (fresh inputs; never trained on) ----------------------------------
SEEN = "seen"  # the SFT compositions
RL_PROMPTS = "rl_prompts"  # the RL compositions
UNSEEN = "unseen"  # compositions no training support holds
VALIDATION = "validation"  # compositions held out of training and of ``unseen``: hyperparameters are chosen here
DEEPER = "deeper"  # depths beyond L_train
EVAL_ATOMS = "eval_atoms"  # L = 1 atoms
EVAL_HELDOUT_ATOMS = "eval_heldout_atoms"  # the held-out modules as L = 1 atoms
UNSEEN_MISSING = "unseen_missing"  # the unseen compositions that use an ``sft_missing`` module
UNSEEN_COVERED = "unseen_covered"  # ... and those that use none of them
SEPARATE = "separate"  # L = 2 chains that use one skill of planted_split's pair beside another skill
SWAPPED = "swapped"  # the pair in the order training never showed (planted_split)

# --- streams ---------------------------------------------------------------------------------
GRPO_SAMPLING = "grpo-sample"  # the sampling noise of GRPO step k (hlsm.grpo.GRPO.generator)
DEFAULT_STREAM = "train"  # an HLSM built without a split


def train_stream(support: str) -> str:
    """The stream every trainer draws training support ``support``'s items from."""
    return f"train:{support}"


def probe_stream(support: str) -> str:
    """The stream probes draw their items from (fresh items, apart from evaluation's)."""
    return f"probe:{support}"


def drift_stream(support: str) -> str:
    """The stream drift measures (output KL between checkpoints) draw their items from."""
    return f"drift:{support}"


def eval_stream(support: str) -> str:
    """The stream evaluation draws support ``support``'s items from (any support, by name)."""
    return f"eval:{support}"
