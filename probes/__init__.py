"""Probes: do learned representations identify the latent modules?"""
