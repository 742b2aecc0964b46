"""Carrying a run cache through git: a plateau chain packed, its machine gone, unpacked, continued."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from experiments import carry, fair
from experiments.report import write_csv
from experiments.runs import CARRIED, is_finished, minutes, posthoc_eval
from hlsm.checkpoint import CHECKPOINT, CONFIG, POLICY, read_config

torch.set_num_threads(1)


def _run(root, name, init=None):
    d = root / name
    d.mkdir(parents=True)
    (d / CONFIG).write_text(json.dumps({"config": {"init": str(root / init) if init else None}}))
    (d / POLICY).write_bytes(b"w")
    return d


def test_spent_runs_are_the_ones_later_sft_runs_started_from_and_no_grpo_run_did(tmp_path):
    runs = [_run(tmp_path, "sft-a"), _run(tmp_path, "sft-b", "sft-a"), _run(tmp_path, "sft-c", "sft-b"),
            _run(tmp_path, "grpo-d", "sft-c"), _run(tmp_path, "sft-e", "sft-c"), _run(tmp_path, "sft-f", "sft-e")]
    # a chain's interior blocks are spent; its tip (a GRPO run's base), the leaves and what an SFT
    # continuation of a leaf started from but nothing else did stay
    assert carry.spent(runs) == {"sft-a", "sft-b", "sft-e"}


def test_a_chain_carried_to_a_new_machine_continues_without_training_anything(tmp_path, monkeypatch, capsys):
    root, pack = tmp_path / "runs", tmp_path / "repo" / "carried" / "chain"
    state = fair.plateau_bases("tiny", [(0, 0)], str(root))[(0, 0)]
    chain = state["chain"]
    assert len(chain) >= 2  # the base and a block at least
    (chain[-1] / "x.tmp").write_text("half-written")
    m = carry.pack(root, pack)
    assert m["runs"] == len(chain) and m["weights_kept"] == [chain[-1].name] and m["root"] == str(root.resolve())
    for d in chain:  # every run: config, metrics, its minutes; no resumable state; weights only at the tip
        p = pack / d.name
        assert (p / CONFIG).exists() and not (p / CHECKPOINT).exists() and not list(p.glob("*.tmp"))
        assert json.loads((p / CARRIED).read_text())["minutes"] == pytest.approx(minutes(d))
        assert (p / POLICY).exists() == (d == chain[-1])
    assert carry.pack(root, pack) == m  # packing again replaces the pack with the same
    write_csv([{"condition": "base", "run": chain[0].name}], tmp_path / "table.csv")
    only = carry.pack(root, tmp_path / "only", [tmp_path / "table.csv"])  # a finished study's table
    assert only["weights_kept"] == [chain[0].name] and not (tmp_path / "only" / chain[-1].name / POLICY).exists()

    shutil.rmtree(root)  # the machine is gone; the pack came back with git
    with pytest.raises(ValueError, match="unpack there"):
        carry.unpack(pack, tmp_path / "elsewhere")
    assert sorted(carry.unpack(pack)) == sorted(chain)
    assert carry.unpack(pack) == []  # never over a finished run
    assert all(is_finished(d, cfg) for d, cfg in zip(chain, state["configs"]))
    monkeypatch.setattr("experiments.runs._train", lambda *a, **k: pytest.fail("nothing may retrain"))
    again = fair.plateau_bases("tiny", [(0, 0)], str(root))[(0, 0)]
    assert again["chain"] == chain and again["checks"] == state["checks"] and again["gain"] == state["gain"]
    assert [minutes(d) for d in again["chain"]] == pytest.approx([minutes(d) for d in chain])
    split = fair.split_spec("tiny", 0)
    with pytest.raises(FileNotFoundError, match=f"{chain[0]}: no {POLICY}"):  # a new evaluation needs weights
        posthoc_eval(chain[0], split, ("seen",), 3, 0)
    assert read_config(chain[-1]) == state["configs"][-1].to_dict()


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        carry.main(["unpack", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "not a pack" in err
    with pytest.raises(SystemExit):
        carry.main(["pack", str(tmp_path / "missing"), str(tmp_path / "p")])
    assert "not a directory" in capsys.readouterr().err and not (tmp_path / "p").exists()
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit):
        carry.main(["pack", str(tmp_path), str(tmp_path / "p"), "--weights-for", str(tmp_path / "t.csv")])
    assert "not a CSV with a 'run' column" in capsys.readouterr().err and not (tmp_path / "p").exists()
