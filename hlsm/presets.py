"""What a preset is: one name (smoke | cpu | paper) for a model shape, the SFT defaults that train
it, and the GRPO defaults that continue from it. The three tables sit here side by side:

    python -m hlsm.sft --preset cpu --out runs/sft               # MODEL_PRESETS["cpu"], SFT_PRESETS["cpu"]
    python -m hlsm.grpo --preset cpu --init runs/sft --out ...   # GRPO_PRESETS["cpu"]; the shape comes
                                                                 # with the --init run, not from here

Each entry holds config-field overrides only; the config class fills in the other fields with its
defaults and validates them: ``PolicyConfig.preset(name)``, ``SFTConfig.from_preset(name)``,
``GRPOConfig.from_preset(name)``. A flag or keyword given beside the preset wins over its value.
The old names still work: ``hlsm.policy.PRESETS`` (these shapes as ``PolicyConfig`` objects),
``hlsm.sft.SFT_PRESETS`` and ``hlsm.grpo.GRPO_PRESETS`` (these very dicts).

The figures have a table of their own (``experiments.protocol.PRESETS``: task, model preset and
budgets per figure preset); it names a model shape from here and sets its own training budgets.
"""

# Model shapes (hlsm.policy.PolicyConfig fields).
MODEL_PRESETS = {
    # ~0.4M params: tests and smoke runs, seconds on a CPU core (depth <= 3, values format)
    "smoke": dict(n_layer=2, n_head=4, n_embd=128, block_size=96),
    # ~0.8M params: minutes on 2 CPU cores; long enough for depth-6 explicit traces
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=160),
    # ~10.7M params: one GPU
    "paper": dict(n_layer=6, n_head=8, n_embd=384, block_size=256, pos="rope"),
}

# SFT defaults (hlsm.sft.SFTConfig fields), training the model shape of the same name.
SFT_PRESETS = {
    # about a minute on 2 cores; on the default split it gets most seen compositions right
    "smoke": dict(steps=2000, batch_size=32, lr=3e-3, warmup_steps=20, eval_every=500, eval_n=128,
                  ckpt_every=500),
    "cpu": dict(steps=3000, batch_size=64, micro_batch_size=32, lr=1e-3, warmup_steps=100, eval_every=500,
                eval_n=256, ckpt_every=500),
    "paper": dict(steps=20000, batch_size=256, lr=6e-4, warmup_steps=500, eval_every=2000, eval_n=1024,
                  ckpt_every=1000),
}

# GRPO defaults (hlsm.grpo.GRPOConfig fields); the policy and its shape come from the --init SFT run.
GRPO_PRESETS = {
    # seconds from the smoke SFT base, whose RL prompts it solves ~30% of: reward visibly above 0
    "smoke": dict(steps=60, prompts_per_step=16, group_size=8, lr=1e-4, eval_every=30, eval_n=128,
                  ckpt_every=30),
    "cpu": dict(steps=300, prompts_per_step=32, group_size=8, lr=1e-4, eval_every=50, eval_n=256,
                ckpt_every=50),
    "paper": dict(steps=2000, prompts_per_step=128, group_size=16, micro_batch_size=256, lr=5e-5,
                  eval_every=200, eval_n=1024, ckpt_every=200),
}
