"""Probes: do learned representations identify the latent modules?

    probes.activations   capture: every layer's residual stream at labelled token positions
    probes.linear        linear probes, control task, majority baseline, identification score
    probes.causal        patch a step's module tokens with a counterfactual twin's
    probes.drift         output KL, parameter statistics and per-module accuracy between checkpoints
    probes.report        the CLI: python -m probes.report --run RUN_DIR

See docs/probes.md.
"""
