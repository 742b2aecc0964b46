"""hlsm: the hierarchical latent selection model of compositional reasoning, made runnable.

    import hlsm
    hlsm.SKILLS                      # name -> Skill, 24 entries; skill.apply(s) -> str
    hlsm.ROUTINGS                    # name -> Routing, 10 entries
    gen = hlsm.HLSM(depth=3, seed=0) # plus Support constraint keywords
    batch = gen.sample(1000)         # list of Example (.prompt .completion .trace .answer .steps)
    hlsm.score(example, completion)  # 1.0 iff the completion's answer is right

Training (torch) lives in hlsm.policy, hlsm.sft, hlsm.grpo and hlsm.evaluate; identification checks
in hlsm.identify. They are imported on first use, so ``import hlsm`` stays light.
"""

from hlsm.model import HLSM, Example, Step, execute, export_jsonl
from hlsm.modules import MAX_LEN, ROUTING_NAMES, ROUTINGS, SKILL_NAMES, SKILLS, Routing, Skill
from hlsm.support import (
    Composition,
    LeakageError,
    Split,
    Support,
    compositional_split,
    compositions_disjoint,
    heldout_split,
    is_inside,
    items_disjoint,
    planted_split,
)
from hlsm.text import (
    FORMATS,
    REWARDS,
    Parsed,
    Tokenizer,
    answer_reward,
    format_reward,
    parse_completion,
    render,
    score,
    structure_reward,
)

_LAZY = {"identify": "hlsm.identify", "policy": "hlsm.policy", "sft": "hlsm.sft", "grpo": "hlsm.grpo",
         "evaluate": "hlsm.evaluate", "checkpoint": "hlsm.checkpoint", "integrations": "hlsm.integrations"}


def __getattr__(name):  # hlsm.sft, hlsm.identify, ... without importing torch up front
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'hlsm' has no attribute {name!r}")


__all__ = [
    "FORMATS", "HLSM", "MAX_LEN", "REWARDS", "ROUTINGS", "ROUTING_NAMES", "SKILLS", "SKILL_NAMES",
    "Composition", "Example", "LeakageError", "Parsed", "Routing", "Skill", "Split", "Step",
    "Support", "Tokenizer", "answer_reward", "compositional_split", "compositions_disjoint",
    "execute", "export_jsonl", "format_reward", "heldout_split", "is_inside", "items_disjoint",
    "parse_completion", "planted_split", "render", "score", "structure_reward",
]
