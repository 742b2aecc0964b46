"""Train a causal LM with TRL's GRPOTrainer on an HLSM split, rewarded by hlsm's exact verifiers.

    pip install 'hlsm[trl]'
    python examples/trl_grpo.py --tiny --steps 20 --out runs/trl-tiny                # random tiny model, CPU
    python examples/trl_grpo.py --model Qwen/Qwen2.5-0.5B-Instruct --chat --define-modules \\
        --steps 200 --out runs/trl-qwen                                             # any HF causal LM

``--tiny`` builds a small randomly initialised Qwen2-style model and a character-level tokenizer
locally (nothing is downloaded) and first teaches it the trace format with a short teacher-forced
warm start on the split's ``sft`` support (``--sft-steps``; a random model never writes a
parseable trace, so every GRPO group would tie at reward 0); ``--model`` takes a Hub name or a
local directory. Prompts come
from one support of a split (``--split`` JSON from ``python -m hlsm split``, default a depth-2
compositional split over 8 skills), as plain text or, with ``--chat``, as chat messages with the
task format in the system message. Rewards: ``hlsm_answer``, ``hlsm_format``, ``hlsm_structure``
(weights via ``--weights``); TRL logs each as ``rewards/<name>/mean``. The model and tokenizer are
saved to ``--out``.
"""

from __future__ import annotations

import argparse
import json

import torch

from hlsm.integrations import load_split
from hlsm.integrations.hf import to_dataset
from hlsm.integrations.trl import char_tokenizer, reward_funcs, tiny_causal_lm

DEFAULT_SPLIT = {"factory": "compositional", "depth": 2, "routings": ["chain"], "deeper": [],
                 "skills": ["reverse", "rotate_left", "rotate_right", "swap_pairs", "swap_halves", "shift_up",
                            "shift_down", "atbash"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a Hugging Face causal LM: Hub name or local directory")
    which.add_argument("--tiny", action="store_true", help="a tiny random Qwen2-style model built locally")
    p.add_argument("--out", required=True, help="output directory (model, tokenizer)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default: 20)")
    p.add_argument("--split", default=None, help="split JSON file (default: a depth-2 compositional split)")
    p.add_argument("--support", default="rl", help="the split's support to train on (default: rl)")
    p.add_argument("--format", default="values", choices=("explicit", "values", "answer"))
    p.add_argument("--chat", action="store_true", help="chat-message prompts (for instruction-tuned models)")
    p.add_argument("--define-modules", action="store_true", help="say in each chat prompt what its modules do")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (default: 4)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt, G (default: 4)")
    p.add_argument("--max-completion-length", type=int, default=48, help="tokens (default: 48)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (default: 1e-5; try 1e-3 with --tiny)")
    p.add_argument("--weights", type=json.loads, default=None,
                   help='reward weights as JSON, e.g. \'{"answer": 1, "structure": 0.5}\' (default: all 1)')
    p.add_argument("--sft-steps", type=int, default=None,
                   help="teacher-forced warm-start updates before GRPO (default: 300 with --tiny, else 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 with --tiny, where more threads only contend; else torch's)")
    args = p.parse_args(argv)
    if args.sft_steps is None:
        args.sft_steps = 300 if args.tiny else 0
    if args.sft_steps < 0:
        p.error(f"--sft-steps must be >= 0, got {args.sft_steps}")
    for name in ("steps", "prompts", "group", "max_completion_length"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.define_modules and not args.chat:
        p.error("--define-modules needs --chat (plain-text prompts stay exactly the HLSM prompt)")
    return args


def warm_start(model, tokenizer, split, args, batch: int = 16, lr: float = 3e-3) -> float:
    """Teacher-forced SFT on the split's ``sft`` support (completion tokens + EOS, the prompt masked);
    returns the last batch's loss. Its items come from another seed than GRPO's prompts."""
    data = to_dataset(split, "sft", n=args.sft_steps * batch, seed=args.seed + 1, format=args.format)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss = float("nan")
    for step in range(args.sft_steps):
        rows = data[step * batch:(step + 1) * batch]
        seqs, masks = [], []
        for prompt, completion in zip(rows["prompt"], rows["completion"]):
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            seqs.append(p_ids + c_ids)
            masks.append([0] * len(p_ids) + [1] * len(c_ids))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
        labels = torch.tensor([[t if m else -100 for t, m in zip(s, k)] + [-100] * (width - len(s))
                               for s, k in zip(seqs, masks)])
        out = model(input_ids=ids, attention_mask=(labels != -100) | (torch.arange(width) < torch.tensor(
            [len(s) for s in seqs])[:, None]), labels=labels)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        loss = out.loss.item()
    model.eval()
    return loss


def main(argv=None):
    """Run GRPO; returns the trainer (its ``state.log_history`` holds the logged metrics)."""
    from trl import GRPOConfig, GRPOTrainer

    args = parse_args(argv)
    threads = args.threads if args.threads is not None else (1 if args.tiny else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    split = load_split(args.split if args.split else DEFAULT_SPLIT)
    if args.support not in split.train:  # training on an evaluation support would train on held-out items
        raise SystemExit(f"error: --support {args.support!r} is not a training support of the split "
                         f"(training supports: {', '.join(sorted(split.train))})")
    data = to_dataset(split, args.support, n=args.steps * args.prompts, seed=args.seed, format=args.format,
                      chat=args.chat, define_modules=args.define_modules)
    if args.tiny:
        tokenizer = char_tokenizer()
        model = tiny_causal_lm(tokenizer, max_positions=2048, seed=args.seed)
        if args.sft_steps:
            print(f"warm start: {args.sft_steps} teacher-forced updates, last loss "
                  f"{warm_start(model, tokenizer, split, args):.3f}")
    else:
        tokenizer, model = None, args.model  # GRPOTrainer loads both
    cuda = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, learning_rate=args.lr, seed=args.seed,
        per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
        max_completion_length=args.max_completion_length, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs(args.weights), args=config, train_dataset=data,
                          processing_class=tokenizer)
    trainer.train()
    trainer.save_model(args.out)
    last = [log for log in trainer.state.log_history if "reward" in log][-1]
    rewards = {k: round(v, 4) for k, v in last.items() if k.startswith("rewards/") and k.endswith("/mean")}
    print(f"step {last['step']}: reward {last['reward']:.4f} {rewards} -> saved to {args.out}")
    return trainer


if __name__ == "__main__":
    main()
