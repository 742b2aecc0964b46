"""Fixtures shared by test modules."""

import pytest


@pytest.fixture(scope="session")
def smoke_figures(tmp_path_factory):
    """fig1 then fig4 on the smoke preset, sharing one run cache (fig4 re-uses fig1's runs)."""
    from experiments import fig1, fig4

    root = tmp_path_factory.mktemp("figs")
    flags = ["--preset", "tiny", "--seeds", "0", "--splits", "0", "--runs", str(root / "runs"),
             "--out", str(root / "out"), "--workers", "1"]
    assert fig1.main(flags) == 0
    n_runs = len(list((root / "runs").iterdir()))
    assert fig4.main(flags) == 0
    return root, n_runs
