"""bench/train_grpo.py's GPT-2 twin computes our Policy's function on left-padded batches.

TRL's GRPOTrainer scores completions with ``_get_per_token_logps_and_entropies`` (its fused LM head:
``model(input_ids, attention_mask, labels, fused_lm_head=True)``, the backbone called without
position_ids) and samples with ``model.generate``; our tokenizer pads prompts on the left. The twin
must give every row its own positions (0 at its <bos>), as hlsm.policy does, and keep its biases
(zero, absent from our Policy) out of the optimizer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402

from hlsm.policy import Policy, PolicyConfig, completion_logprobs, left_pad  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PAD, BOS, EOS = 0, 1, 2
# prompts of different lengths (left-padded to 9), completions of different lengths (right-padded)
PROMPTS = [[BOS, 5, 6, 7, 8, 30], [BOS, 9, 30], [BOS, 3, 4, 5, 6, 7, 8, 9, 30], [BOS, 12, 13, 30]]
COMPLETIONS = [[10, 11, 12, EOS], [20, 21, 22, 23, 24, 25, EOS], [7, EOS], [40, 41, 42, 43, 44]]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_grpo", ROOT / "bench" / "train_grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model = Policy(PolicyConfig.preset("smoke", pos="learned")).eval()
    with torch.no_grad():  # random init is near-uniform: give the positions a say in the output
        model.wpe.weight.mul_(25)
    return model


def trl_per_token_logps(model, input_ids, attention_mask, logits_to_keep):
    """Per-token log-probs the way GRPOTrainer computes them in its loss (and for old log-probs)."""
    fn = getattr(GRPOTrainer, "_get_per_token_logps_and_entropies", None)
    if fn is None:
        pytest.skip(f"trl {trl.__version__}: GRPOTrainer has no _get_per_token_logps_and_entropies")
    # the only trainer state it reads: the accelerator (autocast; is_main_process for its profiler)
    stub = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext, is_main_process=True),
        temperature=1.0,
    )
    out = fn(stub, model, input_ids, attention_mask, logits_to_keep)
    return out[0] if isinstance(out, tuple) else out


def trl_batch():
    """prompt_ids/mask left-padded, completion_ids/mask right-padded, as GRPOTrainer builds them."""
    prompt_ids, pad = left_pad(PROMPTS, PAD)
    prompt_mask = (torch.arange(prompt_ids.shape[1])[None, :] >= pad[:, None]).long()
    T = max(len(c) for c in COMPLETIONS)
    completion_ids = torch.tensor([c + [PAD] * (T - len(c)) for c in COMPLETIONS])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (T - len(c)) for c in COMPLETIONS])
    return prompt_ids, prompt_mask, completion_ids, completion_mask


@pytest.fixture(scope="module")
def twin(bench, policy):
    gpt = bench.gpt2_copy(policy)
    from trl.trainer.utils import add_fused_lm_head

    # what GRPOTrainer.__init__ does to its model before training
    add_fused_lm_head(gpt, temperature=1.0, outputs=("log_probs", "entropy"))
    return gpt.eval()


def test_biases_frozen(twin):
    biases = [name for name, _ in twin.named_parameters() if name.endswith(".bias")]
    assert biases, "the GPT-2 twin should have bias parameters (zero)"
    trainable = [name for name, p in twin.named_parameters() if name.endswith(".bias") and p.requires_grad]
    assert not trainable, f"biases the optimizer would move: {trainable}"
    assert all(p.requires_grad for name, p in twin.named_parameters() if not name.endswith(".bias"))


def test_trl_training_logprobs_match_policy_on_left_padded_rows(twin, policy):
    prompt_ids, prompt_mask, completion_ids, completion_mask = trl_batch()
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        theirs = trl_per_token_logps(twin, input_ids, attention_mask, completion_ids.size(1))
        ours, _ = completion_logprobs(policy, PROMPTS, completion_ids, completion_mask.bool(), with_entropy=False)
    mask = completion_mask.bool()
    diff = (theirs - ours).abs()[mask]
    assert diff.max() < 1e-5, f"per-token log-probs differ by up to {diff.max():.3g} nats"


def test_trl_generation_logprobs_match_policy_on_left_padded_rows(twin, policy):
    prompt_ids, prompt_mask, _, _ = trl_batch()
    with torch.no_grad():
        out = twin.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=False, max_new_tokens=6,
                            min_new_tokens=6, pad_token_id=PAD, eos_token_id=EOS, return_dict_in_generate=True,
                            output_logits=True)
        completion = out.sequences[:, prompt_ids.shape[1] :]
        theirs = torch.stack(out.logits, dim=1).float().log_softmax(-1).gather(2, completion[..., None])[..., 0]
        mask = torch.ones_like(completion, dtype=torch.bool)
        ours, _ = completion_logprobs(policy, PROMPTS, completion, mask, with_entropy=False)
    diff = (theirs - ours).abs()
    assert diff.max() < 1e-5, f"generation log-probs differ by up to {diff.max():.3g} nats"
