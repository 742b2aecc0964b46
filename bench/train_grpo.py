"""GRPO step time and rollout tokens/s: hlsm.grpo against TRL's GRPOTrainer doing the same work.

Both sides start from the same policy: a brief SFT run of the ``--preset`` model (or ``--init``),
loaded as our ``Policy`` and, weight for weight, into a transformers ``GPT2LMHeadModel`` built from
a ``GPT2Config`` of the same shape (zero biases, exact GELU: the logits agree to the last bit;
nothing is downloaded). Same RL prompts (the split's ``rl_inside`` stream, in order), same G, same
completion cap, temperature 1, reward answer + 0.5 structure, one optimizer update per rollout
batch over all P x G completions, no KL reference, no gradient checkpointing, fp32 on CPU (bf16
autocast on CUDA, ``--device cuda``), the same torch thread count. Step = rollout (sampling +
rewards + advantages) + update (forward, backward, optimizer). Reported: the median over
``--steps`` timed steps after ``--warmup`` untimed ones, and the fastest step (on a shared machine
the least disturbed by other load).

Where hlsm.grpo does less arithmetic for the same update, it is by design and exact: completions
are cut to their micro-batch's longest row (not the batch's), and rows of zero advantage (groups
with tied rewards, the zero_std_frac column) are not back-propagated: without a KL term their
gradient is exactly zero, and the loss aggregation still counts them.

Run it from a virtualenv holding TRL (never the project's):

    python3 -m venv /work/venv-trl && . /work/venv-trl/bin/activate
    pip install torch==2.13.0 trl numpy networkx tqdm
    PYTHONPATH=/work/main python bench/train_grpo.py [--preset cpu] [--prompts 32] [--group 8]

``--json numbers.json`` also writes the numbers: ours as soon as they are measured, TRL's beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from hlsm.checkpoint import load_policy  # noqa: E402
from hlsm.grpo import GRPO, GRPOConfig, combined_rewards, load_init  # noqa: E402
from hlsm.model import HLSM  # noqa: E402
from hlsm.names import train_stream  # noqa: E402
from hlsm.text import Tokenizer  # noqa: E402

REWARDS = {"answer": 1.0, "structure": 0.5}
SPLIT = {"factory": "compositional", "depth": 2, "routings": ["chain"], "deeper": [], "input_len": [3, 5],
         "skills": ["reverse", "rotate_left", "shift_up", "swap_pairs"]}


def sft_policy(args) -> Path:
    """The starting policy: ``--init``, else a brief label-smoothed SFT run (cached under /tmp)."""
    if args.init:
        return Path(args.init)
    from hlsm.sft import SFTConfig, train

    out = Path(f"/tmp/bench_grpo_sft_{args.preset}_{args.sft_steps}")
    if not (out / "policy.pt").exists():
        cfg = SFTConfig.from_preset(
            args.preset, split=SPLIT, train_supports={"sft": 1.0, "atoms": 0.5}, eval_supports=("seen",),
            steps=args.sft_steps, lr=3e-3, label_smoothing=0.1, eval_every=0, eval_n=32, ckpt_every=0,
            device="cpu",
        )
        train(cfg, out, resume=(out / "config.json").exists(), progress=False)
    return out


def ours(args, init: Path, n_steps: int, seed: int = 0) -> dict:
    model, split, fmt, gran = load_init(init)
    cfg = GRPOConfig(steps=n_steps, prompts_per_step=args.prompts, group_size=args.group, micro_batch_size=64,
                     max_new_tokens=args.max_new, lr=1e-4, rewards=REWARDS, rl_support="rl_inside",
                     loss_agg="seq_mean", device=args.device, seed=seed)
    trainer = GRPO(cfg, model, split, fmt, gran)
    every = [trainer.step(k) for k in range(n_steps)]
    steps = every[args.warmup :]
    med = {key: statistics.median(m[key] for m in steps) for key in ("step_s", "rollout_s", "update_s")}
    med["best_step_s"] = min(m["step_s"] for m in steps)
    tokens = statistics.mean(m["completion_len"] for m in steps) * args.prompts * args.group
    return {
        **med,
        "params": model.num_params(),
        "completion_len": statistics.mean(m["completion_len"] for m in steps),
        "zero_std": statistics.mean(m["zero_std_frac"] for m in steps),
        "reward": statistics.mean(m["reward_mean"] for m in steps),
        "rollout_tok_s": tokens / med["rollout_s"],
        "rewards": [m["reward_mean"] for m in every],
    }


def _positions_from_mask(module, args, kwargs):
    """Forward pre-hook on the GPT-2 backbone: without position_ids, derive them from attention_mask.

    Our tokenizer pads prompts on the left, and hlsm.policy gives every row its own positions (0 at
    its <bos>, padding clamped to 0). GPT-2 would number every row 0..L-1, and TRL's training
    forward (its fused LM head calls the backbone with input_ids and attention_mask only) passes no
    position_ids. The mask may cover cached keys too (generation): the last T positions are ours.
    """
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is not None or mask is None or mask.ndim != 2:
        return None
    x = kwargs.get("input_ids", args[0] if args else None)
    if x is None:
        x = kwargs.get("inputs_embeds")
    if x is None:
        return None
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -x.shape[1] :]
    return args, {**kwargs, "position_ids": positions}


def gpt2_copy(model):
    """A transformers GPT-2 computing exactly our Policy's function (learned positions, no biases).

    Also on left-padded batches: its backbone takes each row's positions from the attention mask
    (``_positions_from_mask``). Its biases are zero and frozen (our Policy has none).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    pc, src, tok = model.config, model.state_dict(), Tokenizer()
    if pc.pos != "learned":
        raise ValueError(f"the GPT-2 twin needs learned positions, the policy has pos={pc.pos!r}")
    gpt = GPT2LMHeadModel(GPT2Config(
        vocab_size=pc.vocab_size, n_positions=pc.block_size, n_embd=pc.n_embd, n_layer=pc.n_layer,
        n_head=pc.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu",
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, tie_word_embeddings=True,
    ))
    t = gpt.transformer
    with torch.no_grad():
        t.wte.weight.copy_(src["wte.weight"])
        t.wpe.weight.copy_(src["wpe.weight"])
        for i, h in enumerate(t.h):
            for dst, name in ((h.ln_1, "ln_1"), (h.ln_2, "ln_2")):
                dst.weight.copy_(src[f"blocks.{i}.{name}.weight"])
            for dst, name in ((h.attn.c_attn, "attn.c_attn"), (h.attn.c_proj, "attn.c_proj"),
                              (h.mlp.c_fc, "mlp.c_fc"), (h.mlp.c_proj, "mlp.c_proj")):
                dst.weight.copy_(src[f"blocks.{i}.{name}.weight"].T)  # GPT-2's Conv1D stores (in, out)
        t.ln_f.weight.copy_(src["ln_f.weight"])
        for name, p in gpt.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
                p.requires_grad_(False)  # absent from our Policy: the optimizer must not move them
    gpt.transformer.register_forward_pre_hook(_positions_from_mask, with_kwargs=True)
    x = torch.randint(3, pc.vocab_size, (2, 16))
    assert torch.equal(gpt.eval()(x).logits, model.eval()(x)), "the GPT-2 twin computes another function"
    # left-padded rows: each its own positions and padding hidden, on both sides
    pad = torch.tensor([5, 0])
    keep = torch.arange(16)[None, :] >= pad[:, None]
    x = torch.where(keep, x, tok.pad_id)
    positions = (torch.arange(16)[None, :] - pad[:, None]).clamp(min=0)
    with torch.no_grad():
        theirs = gpt(x, attention_mask=keep.long()).logits
        ours = model(x, positions, keep)
    assert torch.allclose(theirs[keep], ours[keep], atol=1e-5), "the GPT-2 twin differs on left-padded rows"
    return gpt


def hf_tokenizer():
    """Our tokenizer as a transformers fast tokenizer (same ids, same splitting), built offline."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as RawTokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer()
    raw = RawTokenizer(models.WordLevel(vocab=dict(tok.ids), unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"R\d|S\d\d|."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<bos>",
                                 eos_token="<eos>")
    hf.padding_side = "left"
    sample = "abc|R0S01 R3S12>"
    assert hf("<bos>" + sample)["input_ids"] == tok.encode(sample, bos=True), "tokenizers disagree"
    return hf


def theirs(args, init: Path, n_steps: int, seed: int = 0) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    model, _ = load_policy(init)
    _, split, fmt, _ = load_init(init)
    gpt = gpt2_copy(model)
    stream = HLSM(support=split.train["rl_inside"], seed=0, fmt=fmt, stream=train_stream("rl_inside"))
    examples = stream.sample(args.prompts * n_steps)  # the prompts our side draws, in the same order
    data = Dataset.from_dict({"prompt": ["<bos>" + ex.prompt for ex in examples],
                              "index": list(range(len(examples)))})

    def reward(prompts, completions, index, **_):
        return combined_rewards([examples[i] for i in index], completions, REWARDS)[0].tolist()

    times, records = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(-time.perf_counter())

        def on_step_end(self, *a, **k):
            times[-1] += time.perf_counter()

        def on_log(self, *a, logs=None, **k):
            records.append(dict(logs or {}))

    cfg = TRLConfig(
        output_dir=args.out, per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group, max_completion_length=args.max_new, temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=1e-4, lr_scheduler_type="constant", beta=0.0,  # ours: constant lr, no KL
        num_iterations=1, loss_type="grpo", max_steps=n_steps, logging_steps=1, report_to=[],
        use_cpu=args.device == "cpu", bf16=args.device != "cpu", gradient_checkpointing=False,
        save_strategy="no", shuffle_dataset=False,
        dataloader_num_workers=0, disable_tqdm=True, seed=seed,
    )
    trainer = GRPOTrainer(model=gpt, reward_funcs=reward, args=cfg, train_dataset=data,
                          processing_class=hf_tokenizer(), callbacks=[Clock()])
    rollout, inner = [], trainer._generate_and_score_completions

    def timed(*a, **k):  # sampling + rewards + advantages, as on our side
        t = time.perf_counter()
        out = inner(*a, **k)
        rollout.append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed
    trainer.train()
    steps = [x for x in records if "completions/mean_length" in x][args.warmup :]
    length = statistics.mean(float(x["completions/mean_length"]) for x in steps)
    med = {"step_s": statistics.median(times[args.warmup :]),
           "rollout_s": statistics.median(rollout[args.warmup :]), "best_step_s": min(times[args.warmup :])}
    return {
        **med,
        "update_s": med["step_s"] - med["rollout_s"],
        "params": sum(p.numel() for p in gpt.parameters()),
        "completion_len": length,
        "zero_std": statistics.mean(float(x["frac_reward_zero_std"]) for x in steps),
        "reward": statistics.mean(float(x["reward"]) for x in steps),
        "rollout_tok_s": length * args.prompts * args.group / med["rollout_s"],
        "rewards": [float(x["reward"]) for x in records if "completions/mean_length" in x],
    }


def line(name: str, r: dict, args) -> str:
    tok_s = r["completion_len"] * args.prompts * args.group / r["step_s"]
    return (f"  {name:<12} {r['params'] / 1e6:.2f}M params | step {r['step_s']:.3f}s = rollout "
            f"{r['rollout_s']:.3f}s + update {r['update_s']:.3f}s (best step {r['best_step_s']:.3f}s) | "
            f"rollout {r['rollout_tok_s']:,.0f} tok/s, "
            f"step {tok_s:,.0f} tok/s | len {r['completion_len']:.1f} reward {r['reward']:.3f} "
            f"zero_std {r['zero_std']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu", help="policy size (hlsm.policy.PRESETS) of the brief SFT run")
    ap.add_argument("--init", default="", help="an SFT run directory to start from instead")
    ap.add_argument("--sft-steps", type=int, default=400)
    ap.add_argument("--prompts", type=int, default=32, help="P: prompts per step")
    ap.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--max-new", type=int, default=48, help="completion length cap")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (bf16 on both sides; the SFT start stays on CPU)")
    ap.add_argument("--out", default="/tmp/bench_trl_grpo", help="TRL's output_dir (nothing is saved)")
    ap.add_argument("--learn", type=int, nargs="+", default=None, metavar="SEED",
                    help="instead of timing: run --steps steps per seed on both sides and compare their rewards")
    ap.add_argument("--json", default="", help="also write the timing numbers to this file (bench/gpu.py reads it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    init = sft_policy(args)
    if args.learn:
        return learn(args, init)
    n = args.warmup + args.steps
    print(f"GRPO step from {init}: P={args.prompts} prompts x G={args.group}, <= {args.max_new} new tokens, "
          f"{args.threads} threads, median of {args.steps} steps after {args.warmup} warm-up, "
          f"torch {torch.__version__}")
    a = ours(args, init, n)
    print(line("hlsm.grpo", a, args), flush=True)
    numbers = {"device": args.device, "prompts": args.prompts, "group": args.group, "ours": a}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(numbers, indent=1))

    save()  # ours stand even if TRL is missing or fails
    import trl

    b = theirs(args, init, n)
    print(line(f"TRL {trl.__version__}", b, args))
    ratio = {k: b[k] / a[k] for k in ("step_s", "rollout_s", "update_s", "best_step_s")}
    print(f"  speed-up, TRL / hlsm.grpo (medians): step {ratio['step_s']:.1f}x, rollout {ratio['rollout_s']:.1f}x, "
          f"update {ratio['update_s']:.1f}x; best step against best step {ratio['best_step_s']:.1f}x")
    numbers.update(trl=b, trl_version=trl.__version__, speedup=ratio)
    save()


def learn(args, init: Path) -> None:
    """Do both trainers learn at the same rate? Per seed, ``--steps`` steps from the same policy on the
    same prompts: mean reward over the first and last quarter of steps, mean and 95% t over seeds."""
    from scipy import stats

    def ci(xs):
        m = statistics.mean(xs)
        h = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
        return f"{m:.3f} ± {h:.3f}"

    q = max(1, args.steps // 4)
    args.warmup = 0
    rows = {}
    for seed in args.learn:
        for name, side in (("hlsm.grpo", ours), ("TRL", theirs)):
            r = side(args, init, args.steps, seed)["rewards"]
            rows.setdefault(name, []).append((statistics.mean(r[:q]), statistics.mean(r[-q:])))
            print(f"  seed {seed} {name:<9}: reward first {q} steps {rows[name][-1][0]:.3f}, last {q} "
                  f"{rows[name][-1][1]:.3f}", flush=True)
    print(f"{len(args.learn)} seeds x {args.steps} steps, P={args.prompts} x G={args.group}, from {init}:")
    for name, rs in rows.items():
        print(f"  {name:<9}: first {q} steps {ci([a for a, _ in rs])}, last {q} {ci([b for _, b in rs])}, "
              f"gain {ci([b - a for a, b in rs])}")
    diff = [a[1] - b[1] for a, b in zip(rows["hlsm.grpo"], rows["TRL"])]
    print(f"  hlsm.grpo - TRL, last {q} steps (paired by seed): {ci(diff)}")


if __name__ == "__main__":
    main()
