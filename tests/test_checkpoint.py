"""Runs: atomic checkpoints, bit-identical resume, NaN stops with the last good checkpoint intact."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import hlsm.sft
from hlsm.checkpoint import (
    CHECKPOINT,
    MetricsLog,
    NonFiniteLossError,
    init_run,
    load_checkpoint,
    load_policy,
    read_metrics,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from hlsm.sft import SFTConfig, train
from hlsm.support import EVAL_INPUTS, TRAIN_INPUTS, Split, Support

torch.set_num_threads(1)


def tiny_cfg(**kw) -> SFTConfig:
    """A 1-layer model on two explicit depth-2 compositions plus atoms: a few steps take a second."""
    comps = ((("chain", "reverse"), ("chain", "shift_up")), (("chain", "swap_pairs"), ("chain", "reverse")))
    common = dict(routings=("chain",), input_len=(4, 5), alphabet="abcd")
    split = Split(
        "tiny",
        train={"sft": Support(depths=(2,), compositions=comps, input_buckets=TRAIN_INPUTS, **common),
               "atoms": Support(depths=(1,), skills=("reverse", "shift_up"), input_buckets=TRAIN_INPUTS,
                                **common)},
        eval={"seen": Support(depths=(2,), compositions=comps, input_buckets=EVAL_INPUTS, **common)},
    )
    base = dict(preset="smoke", model={"n_layer": 1, "n_embd": 32, "n_head": 2}, split=split,
                train_supports={"sft": 1.0}, eval_supports=("seen",), steps=6, batch_size=8, lr=1e-3,
                warmup_steps=2, eval_every=0, eval_n=8, ckpt_every=3, log_every=1, device="cpu")
    return SFTConfig(**{**base, **kw})


class Interrupt(Exception):
    """Stands in for a kill: raised from inside the training loop."""


def fail_at_call(monkeypatch, n: int, exc=None):
    """Make the n-th call of the SFT loss raise ``exc`` (or return NaN when exc is None)."""
    real, calls = hlsm.sft.sft_loss, [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        out = real(*args, **kwargs)
        if calls[0] == n:
            if exc is not None:
                raise exc
            return out * float("nan")
        return out

    monkeypatch.setattr(hlsm.sft, "sft_loss", loss)


def params(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_a_kill_is_bit_identical(tmp_path, monkeypatch):
    # dropout and label smoothing on, so RNG state and every config knob must round-trip
    cfg = tiny_cfg(steps=9, ckpt_every=4, model={"n_layer": 1, "n_embd": 32, "n_head": 2, "dropout": 0.1},
                   label_smoothing=0.05, train_supports={"sft": 1.0, "atoms": 0.5}, micro_batch_size=3)
    whole = train(cfg, tmp_path / "whole", progress=False)

    # 8 rows in micro-batches of 3: three loss calls per step; die in step 7, after the step-4 checkpoint
    fail_at_call(monkeypatch, 6 * 3 + 2, Interrupt())
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "killed", progress=False)
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT)["step"] == 4
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "killed", resume=True, progress=False)

    a, b = params(whole.model), params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    drop = ("tokens_per_s",)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert strip(read_metrics(tmp_path / "whole")) == strip(read_metrics(tmp_path / "killed"))


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(steps=10, ckpt_every=3)
    fail_at_call(monkeypatch, 5)  # NaN at step 5; checkpoints at 3 (and would be at 6)
    with pytest.raises(NonFiniteLossError, match="step 5") as info:
        train(cfg, tmp_path / "run", progress=False)
    assert info.value.step == 5 and info.value.last_good == tmp_path / "run" / CHECKPOINT
    state = load_checkpoint(info.value.last_good)
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert read_metrics(tmp_path / "run")[-1]["event"] == "non-finite loss"

    # the run continues from the good checkpoint once the cause is gone
    monkeypatch.undo()
    result = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert result.step == 10 and all(torch.isfinite(p).all() for p in result.model.parameters())


def test_resume_refuses_a_different_config(tmp_path):
    cfg = tiny_cfg(steps=2)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError):
        train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_cfg(steps=2, lr=5e-4), tmp_path / "run", resume=True, progress=False)
    train(tiny_cfg(steps=2, eval_n=4), tmp_path / "run", resume=True, progress=False)  # cadence may change


def test_atomic_save_keeps_the_old_checkpoint_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_run_directory_provenance_and_metrics(tmp_path):
    run = init_run(tmp_path / "r", {"seed": 3, "lr": 0.1})
    record = json.loads((run / "config.json").read_text())
    assert record["seed"] == 3 and record["config"]["lr"] == 0.1
    assert {"git_hash", "git_dirty", "torch", "started"} <= set(record)
    log = MetricsLog(run)
    for step in (1, 2, 3, 4):
        log.log({"step": step, "loss": 1.0 / step})
    log.truncate(2)
    assert [r["step"] for r in log.read()] == [1, 2]


def test_load_policy_from_a_run(tmp_path):
    result = train(tiny_cfg(steps=2), tmp_path / "run", progress=False)
    model, payload = load_policy(tmp_path / "run")
    assert payload["step"] == 2 and payload["config"]["steps"] == 2
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path)


# --- issue 15 / 23 regressions: resume edge cases, corrupt and unsafe files ------------------------


def test_resume_without_a_checkpoint_starts_over_and_logs_like_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    cfg = tiny_cfg(steps=5, ckpt_every=4)
    train(cfg, tmp_path / "whole", progress=False)
    fail_at_call(monkeypatch, 3, Interrupt())  # killed in step 3, before the first checkpoint (step 4)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "killed", progress=False)
    assert not (tmp_path / "killed" / CHECKPOINT).exists() and read_metrics(tmp_path / "killed")
    monkeypatch.undo()
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    assert "no checkpoint, starting over" in capsys.readouterr().err
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]
    assert strip(read_metrics(tmp_path / "whole")) == strip(read_metrics(tmp_path / "killed"))


def test_resuming_a_finished_run_logs_nothing_and_reports_its_result(tmp_path):
    cfg = tiny_cfg(steps=4)
    first = train(cfg, tmp_path / "run", progress=False)
    log = read_metrics(tmp_path / "run")
    again = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert read_metrics(tmp_path / "run") == log  # no duplicate final eval line
    assert again.loss == first.loss and np.isfinite(again.loss)  # was nan on main
    assert [r["answer"] for r in again.rows] == pytest.approx([r["answer"] for r in first.rows])


def test_a_truncated_checkpoint_is_named_as_corrupt(tmp_path):
    from hlsm.checkpoint import CorruptCheckpointError

    train(tiny_cfg(steps=3), tmp_path / "run", progress=False)
    path = tmp_path / "run" / CHECKPOINT
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError, match=f"{path} is corrupt"):
        train(tiny_cfg(steps=3), tmp_path / "run", resume=True, progress=False)


class _Payload:
    """Unpickling this writes a file: what a malicious shared checkpoint would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("name", ["policy.pt", CHECKPOINT])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path, name):
    from hlsm.checkpoint import UnsafeCheckpointError

    train(tiny_cfg(steps=2), tmp_path / "run", progress=False)
    target = tmp_path / "pwned"
    path = tmp_path / "run" / name
    state = torch.load(path, weights_only=True)
    state["extra"] = _Payload(target)
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match=f"{path}: refused to load"):
        load_policy(path)
    if name == CHECKPOINT:  # --resume reads it too
        with pytest.raises(UnsafeCheckpointError):
            train(tiny_cfg(steps=2), tmp_path / "run", resume=True, progress=False)
    assert not target.exists()


def test_a_checkpoint_of_the_old_format_is_refused_then_converts(tmp_path):
    from hlsm.checkpoint import UnsafeCheckpointError, convert_legacy
    from hlsm.checkpoint import main as checkpoint_main

    train(tiny_cfg(steps=3), tmp_path / "old", progress=False)
    path = tmp_path / "old" / CHECKPOINT
    state = torch.load(path, weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # what checkpoints held before: a numpy array
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match="python -m hlsm.checkpoint convert"):
        load_checkpoint(path)
    assert checkpoint_main(["convert", str(path)]) == 0
    assert isinstance(load_checkpoint(path)["rng"]["numpy"], list)
    assert convert_legacy(path) == path  # converting twice is harmless
    train(tiny_cfg(steps=3), tmp_path / "old", resume=True, progress=False)  # and the run resumes


def test_a_policy_round_trips_to_the_same_logits(tmp_path):
    from hlsm.checkpoint import save_policy

    model = train(tiny_cfg(steps=2), tmp_path / "run", progress=False).model
    path = save_policy(tmp_path, model, {"step": 2}, name="shared.pt")
    loaded, payload = load_policy(path)
    x = torch.randint(0, model.config.vocab_size, (3, 10))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert payload["step"] == 2


def test_damaged_files_load_or_are_named_never_a_raw_error(tmp_path):
    """300 single-byte flips of a checkpoint: each loads, or raises one of the two named errors."""
    from hlsm.checkpoint import CorruptCheckpointError, UnsafeCheckpointError

    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {"w": torch.randn(64)}, "step": 3, "rng": rng_state(), "config": {"a": [1]}})
    data, rnd = good.read_bytes(), random.Random(0)
    bad = tmp_path / "bad.pt"
    for _ in range(300):
        b = bytearray(data)
        b[rnd.randrange(len(b))] ^= 0xFF
        bad.write_bytes(bytes(b))
        try:
            load_checkpoint(bad)
        except (CorruptCheckpointError, UnsafeCheckpointError) as e:
            assert str(bad) in str(e)
