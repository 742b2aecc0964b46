"""Experiments: one module per figure of the paper's findings."""
