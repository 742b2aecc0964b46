"""TensorBoard events (issue 32): every finite numeric scalar of metrics.jsonl, read back from the
event files, at its step; after a kill and a resume, each step once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from hlsm.checkpoint import CHECKPOINT, MetricsLog, load_checkpoint, read_metrics
from hlsm.sft import train
from hlsm.tensorboard import TENSORBOARD, scalar
from tests.test_checkpoint import Interrupt, fail_at_call, tiny_cfg

torch.set_num_threads(1)


def events(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (its reader, which applies purge markers)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / TENSORBOARD), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def logged(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of metrics.jsonl's finite numeric scalars, the ones TensorBoard gets."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run):
        for key, value in record.items():
            if key != "step" and scalar(value) is not None:
                out.setdefault(key, []).append((record["step"], value))
    return out


def assert_same(run: Path) -> None:
    want, got = logged(run), events(run)
    assert got.keys() == want.keys()
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag  # float32


def open_event_files() -> list[str]:
    """Event files this process holds open (Linux; elsewhere none are seen)."""
    fds = Path("/proc/self/fd")
    names = [os.readlink(p) for p in fds.iterdir() if p.is_symlink()] if fds.exists() else []
    return [n for n in names if "tfevents" in n]


def test_a_run_writes_its_metrics_as_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    train(tiny_cfg(steps=4, eval_every=2), tmp_path / "run", progress=False)
    assert_same(tmp_path / "run")
    assert {"loss", "lr", "grad_norm", "eval/seen"} <= events(tmp_path / "run").keys()
    assert not open_event_files()  # the run closed its writer


def test_only_finite_numbers_are_mirrored_at_once_and_reset_deletes_the_events(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "loss": 0.5, "kept_items": [3, 7], "event": "stop", "nan": float("nan"), "flag": True})
    assert events(tmp_path) == {"loss": [(1, 0.5)]}  # on disk before close: a SIGKILL loses no record
    log.reset()
    assert not (tmp_path / TENSORBOARD).exists() and not log.read()


def test_resume_after_a_kill_shows_each_step_once(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    cfg = tiny_cfg(steps=9, ckpt_every=4, eval_every=3)
    fail_at_call(monkeypatch, 7, Interrupt())  # killed in step 7, after the step-4 checkpoint
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 4
    assert [s for s, _ in events(tmp_path / "run")["loss"]] == [1, 2, 3, 4, 5, 6]  # steps 5, 6 get re-logged
    train(cfg, tmp_path / "run", resume=True, progress=False)
    assert_same(tmp_path / "run")
    assert [s for s, _ in events(tmp_path / "run")["loss"]] == list(range(1, 10))


def test_without_tensorboard_the_log_is_unchanged_and_nothing_fails(tmp_path, monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):  # None in sys.modules: the import fails
        monkeypatch.setitem(sys.modules, name, None)
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "loss": 0.5})
    log.truncate(1)
    log.close()
    assert log.read() == [{"step": 1, "loss": 0.5}] and not (tmp_path / TENSORBOARD).exists()
