"""The CUDA path checked against fp32 and against CPU: what only a GPU can tell, and the same
comparisons on CPU so that CI runs their code too.

Tests marked ``cuda`` skip, saying why, where ``torch.cuda.is_available()`` is false (CI has no
GPU); ``python bench/gpu.py --device cuda`` runs this file on a lent one. Each comparison is one
function below, called by a ``cuda`` test on the GPU and by a fast test on CPU (bf16 autocast forced
on CPU, or CPU against CPU):

- ``sft_in_two_precisions`` / ``grpo_in_two_precisions``: an SFT or GRPO step under bf16 autocast
  against an fp32 step from the same weights on the same batch (GRPO: the same rollout); finite
  losses, and loss, gradient norm and gradient direction within the tolerances below;
- ``cache_vs_full``: greedy decoding with the (bf16 on CUDA) KV cache against one cache-free forward
  over prompt + completion: the same log-prob for every completion token;
- ``resume_check``: a run killed after its first checkpoint and resumed restarts from exactly the
  checkpoint's weights and optimizer state, and ends where the uninterrupted run ends;
- ``greedy_gap``: greedy evaluation of one policy run two ways (CUDA and CPU, bf16 and fp32).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import pytest
import torch

import hlsm.sft
from hlsm.checkpoint import CHECKPOINT, load_checkpoint, load_policy, read_metrics
from hlsm.distributed import DistInfo
from hlsm.evaluate import eval_items, score_examples
from hlsm.generation import completion_logprobs, generate
from hlsm.grpo import GRPO, GRPOConfig
from hlsm.policy import AUTOCAST_DTYPE, Policy, PolicyConfig
from hlsm.sft import SFTConfig, train
from hlsm.sft_config import make_split
from hlsm.text import Tokenizer
from tests.test_checkpoint import Interrupt, fail_at_call, tiny_cfg
from tests.test_grpo import REWARD, SPLIT

torch.set_num_threads(1)  # tiny models: one thread beats two contended ones

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason=f"needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda or 'none'}); run bench/gpu.py on a GPU")

# --- tolerances ----------------------------------------------------------------------------------
# bf16 keeps 8 bits of mantissa: each rounding is off by up to 2^-9 (0.2%) relative. Under autocast
# the matrix products accumulate in fp32 and the losses and log-softmaxes run in fp32, so what bf16
# changes is the rounding of the products' inputs and of the logits. "Measured" is CPU bf16 autocast
# (the same ops) on a 400-step smoke SFT policy; each bound leaves about 10x room for the GPU's
# kernels and larger shapes, and stays far below what a real bug (a dropped term, a wrong mask, the
# wrong weights) does to the same number.
LOSS_RTOL = 1e-2  # SFT token-mean loss, bf16 vs fp32, same batch: measured <= 1.1e-3 over 3 updates
GRAD_NORM_RTOL = 2e-2  # pre-clip gradient norm of the first update (same weights): measured 3.7e-3 SFT, 2.5e-4 GRPO
GRAD_COS_MIN = 0.99  # cosine of the first update's bf16 and fp32 gradients: measured 0.99998 (SFT and GRPO)
LOGP_MEAN_BF16 = 1e-2  # mean |log-prob gap| per completion token, bf16: measured 2.4e-4 (cache), 1.3e-3 (GRPO)
LOGP_MAX_BF16 = 0.1  # largest single-token gap, bf16: a logit of 20 rounds by up to 20 * 2^-9 = 0.04; measured 0.028
LOGP_MAX_FP32 = 1e-4  # fp32, the same sums in another order (cache vs one forward, GPU vs CPU): measured 3e-6
GREEDY_DIFF_FP32 = 0.02  # fp32 CUDA vs CPU: share of items whose greedy completion differs (a near-tied argmax
#                          flipped by reordered fp32 sums; exactly 0 CPU against CPU)
GREEDY_DIFF_BF16 = 0.15  # bf16 vs fp32: measured 12 / 256 = 4.7% of completions (near-ties, right and wrong alike)
ACC_GAP_BF16 = 0.03  # greedy accuracy, bf16 vs fp32: measured 0.000 on those 256 items (the flips cancel)
RESUME_REL = 1e-2  # resumed vs uninterrupted final weights, relative to how far the resumed updates moved them:
#                    0 on CPU (bit-identical); on CUDA deterministic kernels are asked for, so this only absorbs
#                    one without a deterministic variant. A resume that loses the optimizer state ends 0.5-0.6 off
#                    (measured, CPU; test_the_resume_check_sees_a_lost_optimizer_state).


# --- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def precision(device_type: str, dtype: torch.dtype | None):
    """Run ``device_type``'s autocast at ``dtype`` (None: fp32, no autocast), as ``hlsm.policy.autocast``
    and the bf16 KV cache read it; restored afterwards. bf16 on CPU runs the CUDA path's dtypes."""
    old = AUTOCAST_DTYPE.pop(device_type, None)
    if dtype is not None:
        AUTOCAST_DTYPE[device_type] = dtype
    try:
        yield
    finally:
        AUTOCAST_DTYPE.pop(device_type, None)
        if old is not None:
            AUTOCAST_DTYPE[device_type] = old


@contextlib.contextmanager
def first_gradients():
    """A list that gets, for each optimizer ``Policy.configure_optimizer`` makes meanwhile, the gradient
    its first step applies (after clipping, which scales it: compare directions), flattened."""
    real, seen = Policy.configure_optimizer, []

    def configure(self, *args, **kwargs):
        opt = real(self, *args, **kwargs)
        index = len(seen)
        seen.append(None)

        def record(o, _args, _kwargs):
            if seen[index] is None:
                seen[index] = torch.cat([p.grad.flatten().float() for g in o.param_groups for p in g["params"]
                                         if p.grad is not None])

        opt.register_step_pre_hook(record)
        return opt

    Policy.configure_optimizer = configure
    try:
        yield seen
    finally:
        Policy.configure_optimizer = real


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def sft_in_two_precisions(cfg: SFTConfig, out) -> dict:
    """``cfg`` trained twice on ``cfg.device`` from the same init on the same batches, under bf16
    autocast and in fp32: {"bf16": its metrics per update, "fp32": ..., "grad_cos": first update's}."""
    kind, runs = torch.device(cfg.device).type, {}
    with first_gradients() as grads:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            with precision(kind, dtype):
                train(cfg, out / name, progress=False)
            runs[name] = [m for m in read_metrics(out / name) if "loss" in m]
    return {**runs, "grad_cos": cosine(grads[0], grads[1])}


def grpo_in_two_precisions(model, split, cfg: GRPOConfig, fmt: str = "values") -> dict:
    """GRPO step 0 twice from ``model``'s weights on one rollout, under bf16 autocast and in fp32, then
    step 1 whole under bf16 (its rollout sampled with the bf16 KV cache).

    The shared rollout is sampled in fp32 and its advantages set to +-1, so that every completion
    carries a gradient whatever the policy's rewards: what is compared is the update's arithmetic.
    Returns {"bf16": step-0 metrics, "fp32": ..., "grad_cos": step 0's, "bf16_step": step-1 metrics}.
    """
    device = torch.device(cfg.device)
    make = lambda: GRPO(cfg, copy.deepcopy(model), split, fmt, dist=DistInfo(device=device))
    with precision(device.type, None):
        ro = make().rollout(0)
    signs = 1.0 - 2.0 * (torch.arange(len(ro.adv), device=device) % 2)
    ro = dataclasses.replace(ro, adv=signs)
    out = {}
    with first_gradients() as grads:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
            trainer = make()
            trainer.rollout = lambda k: ro
            with precision(device.type, dtype):
                out[name] = trainer.step(0)
    with precision(device.type, torch.bfloat16):
        out["bf16_step"] = make().step(1)
    return {**out, "grad_cos": cosine(grads[0], grads[1])}


def check_bf16_step(low: dict, full: dict, grad_cos: float, loss_scale: float) -> None:
    """The bf16 update's numbers against the fp32 one's (metrics dicts of the same update)."""
    assert math.isfinite(low["loss"]) and math.isfinite(full["loss"]), (low["loss"], full["loss"])
    assert abs(low["loss"] - full["loss"]) <= LOSS_RTOL * loss_scale, (low["step"], low["loss"], full["loss"])
    assert abs(low["grad_norm"] - full["grad_norm"]) <= GRAD_NORM_RTOL * full["grad_norm"], (
        low["grad_norm"], full["grad_norm"])
    assert grad_cos >= GRAD_COS_MIN, grad_cos


def check_sft_precisions(r: dict) -> None:
    assert len(r["bf16"]) == len(r["fp32"]) > 0
    check_bf16_step(r["bf16"][0], r["fp32"][0], r["grad_cos"], abs(r["fp32"][0]["loss"]))
    for low, full in zip(r["bf16"][1:], r["fp32"][1:]):  # later updates: the weights drift apart a little
        assert math.isfinite(low["loss"]) and abs(low["loss"] - full["loss"]) <= LOSS_RTOL * abs(full["loss"])


def check_grpo_precisions(r: dict) -> None:
    # GRPO's loss sums +-advantages (a first-update ratio is exactly 1): compared on the scale of one advantage
    check_bf16_step(r["bf16"], r["fp32"], r["grad_cos"], max(1.0, abs(r["fp32"]["loss"])))
    assert r["fp32"]["logp_mismatch"] <= LOGP_MAX_FP32  # fp32 sampler vs fp32 trainer, mean per token
    assert r["bf16"]["logp_mismatch"] <= LOGP_MEAN_BF16  # fp32 sampler vs bf16 trainer: bf16's own error
    step = r["bf16_step"]
    assert math.isfinite(step["loss"]) and math.isfinite(step["grad_norm"])
    assert step["logp_mismatch"] <= LOGP_MEAN_BF16  # bf16 KV-cache sampler vs bf16 trainer forward


def cache_vs_full(model, prompts: list[list[int]], max_new: int) -> tuple[float, float]:
    """Greedy decoding with the KV cache (finished rows dropped as it goes), then one cache-free
    forward over each prompt + completion: (mean, max) |log-prob gap| over the completion tokens, in
    the precision the model's device autocasts to."""
    tok = Tokenizer()
    gen = generate(model, prompts, max_new, temperature=0.0, eos_id=tok.eos_id, pad_id=tok.pad_id)
    with torch.no_grad():
        full, _ = completion_logprobs(model, prompts, gen.ids, gen.mask, with_entropy=False, pad_id=tok.pad_id)
    gap = (gen.logprobs - full).abs()[gen.mask]
    return gap.mean().item(), gap.max().item()


def check_cache(gaps: tuple[float, float], dtype) -> None:
    mean, worst = gaps
    if dtype is None:
        assert worst <= LOGP_MAX_FP32, gaps
    else:
        assert mean <= LOGP_MEAN_BF16 and worst <= LOGP_MAX_BF16, gaps


def greedy_gap(model, items, a: tuple, b: tuple) -> tuple[float, float, float]:
    """Greedy completions of ``items`` by ``model`` run as ``a`` and as ``b``, each (device, autocast
    dtype or None for fp32): (share of items whose completions differ, accuracy as a, accuracy as b)."""
    records = []
    for device, dtype in (a, b):
        with precision(torch.device(device).type, dtype):
            records.append(score_examples(copy.deepcopy(model).to(device), items))
    differ = sum(x["completion"] != y["completion"] for x, y in zip(*records)) / len(items)
    acc = [sum(r["answer"] for r in recs) / len(items) for recs in records]
    return differ, acc[0], acc[1]


def resume_check(cfg: SFTConfig, out, monkeypatch) -> dict:
    """``cfg`` trained whole, and again killed in the update after its first checkpoint, then resumed.

    Returns {"step": the step the resumed run restarts at, "device": where its weights live then,
    "weights" / "moments": whether its weights / AdamW moments then equal the checkpoint's bit for
    bit, "gap": distance of its final weights from the uninterrupted run's, over the distance its
    own updates moved them}.
    """
    assert 0 < cfg.ckpt_every < cfg.steps and cfg.micro_batch_size == 0  # one loss call per update
    whole = train(cfg, out / "whole", progress=False).model.state_dict()
    with monkeypatch.context() as m:
        fail_at_call(m, cfg.ckpt_every + 1, Interrupt())
        with pytest.raises(Interrupt):
            train(cfg, out / "cut", progress=False)
    saved = load_checkpoint(out / "cut" / CHECKPOINT)  # read now: the resumed run overwrites it
    restart, real = {}, hlsm.sft.SFTTrainer.resume

    def resume(self, flag):  # the real resume, then a look at what the run continues from
        start, ckpt = real(self, flag)
        restart.update(step=start, device=next(self.model.parameters()).device.type,
                       weights=copy.deepcopy(self.model.state_dict()),
                       moments=copy.deepcopy(self.opt.state_dict()["state"]))
        return start, ckpt

    with monkeypatch.context() as m:
        m.setattr(hlsm.sft.SFTTrainer, "resume", resume)
        resumed = train(cfg, out / "cut", resume=True, progress=False).model.state_dict()
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
    moments = saved["optimizer"]["state"]
    norm = lambda d: math.sqrt(sum(float((t.double() ** 2).sum()) for t in d.values()))
    gap = norm({k: resumed[k].cpu() - whole[k].cpu() for k in whole})
    moved = norm({k: whole[k].cpu() - saved["model"][k] for k in whole})
    return {"step": restart["step"], "device": restart["device"], "weights": same(restart["weights"], saved["model"]),
            "moments": restart["moments"].keys() == moments.keys()
            and all(same(restart["moments"][i], moments[i]) for i in moments),
            "gap": gap / moved}


# --- the policies: tiny ones on CPU, a briefly trained one on the GPU ---------------------------------


def tiny_policy(pos: str = "learned") -> Policy:
    torch.manual_seed(0)
    return Policy(PolicyConfig(n_layer=1, n_head=2, n_embd=32, block_size=48, pos=pos))


def prompts_of(split, n: int) -> list[list[int]]:
    tok = Tokenizer()
    return [tok.encode(ex.prompt, bos=True) for ex in eval_items(split, "seen", n)]


def grpo_cfg(device: str, **kw) -> GRPOConfig:
    base = dict(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=16, epochs=2, lr=3e-4, rewards=REWARD,
                rl_support="rl_inside", device=device)
    return GRPOConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """A smoke-preset SFT run trained on the GPU (seconds there): its greedy answers are decided by
    clear margins, as a real policy's are, and its GRPO groups have reward variance."""
    out = tmp_path_factory.mktemp("cuda") / "sft"
    cfg = SFTConfig.from_preset("smoke", split=SPLIT, train_supports={"sft": 1.0, "atoms": 0.5},
                                eval_supports=("seen",), steps=600, lr=5e-3, eval_every=0, eval_n=8, ckpt_every=0,
                                log_every=100, device="cuda")
    train(cfg, out, progress=False)
    return out


# --- bf16 vs fp32 steps ------------------------------------------------------------------------------


def test_sft_bf16_step_matches_fp32_on_cpu(tmp_path):
    r = sft_in_two_precisions(tiny_cfg(steps=3, warmup_steps=0, ckpt_every=0), tmp_path)
    check_sft_precisions(r)
    assert r["bf16"][0]["loss"] != r["fp32"][0]["loss"]  # the bf16 run did round: the switch works


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("start", ["trained", "paper"])
def test_sft_bf16_step_matches_fp32_on_cuda(start, cuda_run, tmp_path):
    """From the trained smoke policy (sharp logits: where bf16 rounding shows) and from a fresh
    ``paper``-preset model (the GPU preset: RoPE, 384 wide, flash attention's shapes)."""
    common = dict(steps=3, warmup_steps=0, eval_every=0, eval_n=4, ckpt_every=0, log_every=1, device="cuda")
    if start == "trained":
        cfg = SFTConfig.from_preset("smoke", init=str(cuda_run), split=SPLIT, train_supports={"sft": 1.0},
                                    eval_supports=("seen",), batch_size=64, lr=1e-3, **common)
    else:
        cfg = SFTConfig.from_preset("paper", batch_size=64, eval_supports=("seen",), **common)
    check_sft_precisions(sft_in_two_precisions(cfg, tmp_path))


def test_grpo_bf16_step_matches_fp32_on_cpu():
    r = grpo_in_two_precisions(tiny_policy(), make_split(SPLIT), grpo_cfg("cpu"))
    check_grpo_precisions(r)
    assert r["bf16"]["grad_norm"] != r["fp32"]["grad_norm"]  # the bf16 update did round


@pytest.mark.cuda
@needs_cuda
def test_grpo_bf16_step_matches_fp32_on_cuda(cuda_run):
    model, _ = load_policy(cuda_run)
    cfg = grpo_cfg("cuda", prompts_per_step=16, group_size=8, max_new_tokens=48, micro_batch_size=32)
    check_grpo_precisions(grpo_in_two_precisions(model, make_split(SPLIT), cfg))


# --- KV-cache decoding vs one full forward -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_kv_cache_decoding_equals_a_full_forward_on_cpu(pos, dtype):
    with precision("cpu", dtype):
        check_cache(cache_vs_full(tiny_policy(pos), prompts_of(make_split(SPLIT), 16), 24), dtype)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("start", ["trained", "paper"])
def test_kv_cache_decoding_equals_a_full_forward_on_cuda(start, dtype, cuda_run):
    """The trained smoke policy (learned positions; rows end at <eos> at different steps, so finished
    rows leave the cache) and a fresh ``paper``-shape policy (RoPE, bf16 cache)."""
    torch.manual_seed(0)
    model = load_policy(cuda_run)[0] if start == "trained" else Policy(PolicyConfig.preset("paper"))
    prompts = prompts_of(make_split(SPLIT), 128)
    with precision("cuda", dtype):
        check_cache(cache_vs_full(model.to("cuda"), prompts, 64), dtype)


# --- resuming --------------------------------------------------------------------------------------


def test_a_resumed_run_restarts_from_the_checkpoint_on_cpu(tmp_path, monkeypatch):
    r = resume_check(tiny_cfg(steps=6, ckpt_every=3), tmp_path, monkeypatch)
    assert r == {"step": 3, "device": "cpu", "weights": True, "moments": True, "gap": 0.0}


def test_the_resume_check_sees_a_lost_optimizer_state(tmp_path, monkeypatch):
    """What ``resume_check`` reports when a resume forgets AdamW's moments: they differ, and the run
    ends far outside ``RESUME_REL`` (the bound is tight enough to see it)."""
    monkeypatch.setattr(torch.optim.Optimizer, "load_state_dict", lambda self, state: None)
    r = resume_check(tiny_cfg(steps=6, ckpt_every=3), tmp_path, monkeypatch)
    assert r["weights"] and not r["moments"]
    assert r["gap"] > 10 * RESUME_REL, r["gap"]


@pytest.mark.cuda
@needs_cuda
def test_a_resumed_run_restarts_from_the_checkpoint_on_cuda(tmp_path, monkeypatch):
    # deterministic kernels, so that the two runs can agree; warn_only: a kernel without a
    # deterministic variant shows as a gap (its size in the failure), not as an error
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        r = resume_check(tiny_cfg(steps=6, ckpt_every=3, device="cuda"), tmp_path, monkeypatch)
    finally:
        torch.use_deterministic_algorithms(False)
    assert (r["step"], r["device"], r["weights"], r["moments"]) == (3, "cuda", True, True), r
    assert r["gap"] <= RESUME_REL, r


# --- greedy evaluation on two devices ---------------------------------------------------------------


def test_greedy_evaluation_compared_cpu_against_cpu():
    items = eval_items(make_split(SPLIT), "seen", 24)
    differ, acc_a, acc_b = greedy_gap(tiny_policy(), items, ("cpu", None), ("cpu", None))
    assert differ == 0.0 and acc_a == acc_b


@pytest.mark.cuda
@needs_cuda
def test_greedy_evaluation_on_cuda_equals_cpu(cuda_run):
    model, _ = load_policy(cuda_run)
    items = eval_items(make_split(SPLIT), "seen", 256)
    differ, acc_gpu, acc_cpu = greedy_gap(model, items, ("cuda", None), ("cpu", None))  # fp32 on both
    assert differ <= GREEDY_DIFF_FP32 and abs(acc_gpu - acc_cpu) <= differ, (differ, acc_gpu, acc_cpu)
    differ, acc_gpu, acc_cpu = greedy_gap(model, items, ("cuda", torch.bfloat16), ("cpu", None))  # CUDA's default
    assert differ <= GREEDY_DIFF_BF16 and abs(acc_gpu - acc_cpu) <= ACC_GAP_BF16, (differ, acc_gpu, acc_cpu)
