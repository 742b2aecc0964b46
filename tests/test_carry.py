"""Carrying a run cache through git: a plateau chain packed, its machine gone, unpacked, continued."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from experiments import carry, fair
from experiments.report import write_csv
from experiments.runs import CARRIED, code_version, is_finished, minutes, posthoc_eval, sft_run
from hlsm.checkpoint import CHECKPOINT, CONFIG, POLICY, read_config

torch.set_num_threads(1)


def _run(root, name, init=None, finished=True):
    d = root / name
    d.mkdir(parents=True)
    (d / CONFIG).write_text(json.dumps({"config": {"init": str(root / init) if init else None}}))
    if finished:
        (d / POLICY).write_bytes(b"w")
    return d


def test_spent_runs_are_sft_blocks_that_were_continued_in_turn(tmp_path):
    for name, init in [("sft-a", None), ("sft-b", "sft-a"), ("sft-c", "sft-b"), ("grpo-d", "sft-c"),
                       ("sft-e", "sft-c"), ("sft-f", "sft-e")]:
        _run(tmp_path, name, init)
    # a chain's blocks before the one before its tip are spent; a GRPO run's base, what only leaves
    # start from, and the leaves keep their weights
    assert carry.spent(carry.run_dirs(tmp_path)) == {"sft-a", "sft-b"}


def test_a_tip_keeps_its_weights_while_an_arm_from_it_is_still_to_come(tmp_path):
    """A chain's tip whose labelled control finished and whose GRPO arm is still training (or not yet
    started) keeps its weights: the arm must find them on the next machine."""
    for name, init in [("sft-base", None), ("sft-tip", "sft-base"), ("sft-ctl", "sft-tip")]:
        _run(tmp_path, name, init)
    assert carry.spent(carry.run_dirs(tmp_path)) == {"sft-base"}  # no GRPO run yet: the tip is continued only by a leaf
    _run(tmp_path, "grpo-arm", "sft-tip", finished=False)
    _run(tmp_path, "sft-ctl2", "sft-ctl", finished=False)  # an unfinished run: what it starts from stays
    assert carry.spent(carry.run_dirs(tmp_path)) == {"sft-base"}
    assert carry.pack(tmp_path, tmp_path.parent / "p")["weights_kept"] == ["sft-ctl", "sft-tip"]


def test_a_chain_carried_to_a_new_machine_continues_without_training_anything(tmp_path, monkeypatch):
    root, pack = tmp_path / "runs", tmp_path / "repo" / "carried" / "chain"
    state = fair.plateau_bases("tiny", [(0, 0)], str(root))[(0, 0)]
    chain = state["chain"]
    assert len(chain) == 2  # the base and one block: the tiny rule holds at once (its accuracy stays 0)
    # one more block from the tip, as a chain that went on would have: the base is now spent
    leaf = sft_run(fair.block("tiny", state["configs"][0], chain[-1], state["offset"]), root)
    (chain[-1] / "x.tmp").write_text("half-written")
    m = carry.pack(root, pack)
    assert m["runs"] == 3 and m["weights_kept"] == sorted([chain[-1].name, leaf.name])
    assert m["root"] == str(root.absolute())
    for d in [*chain, leaf]:  # every run: config, metrics, its minutes; no resumable state; weights if not spent
        p = pack / d.name
        assert (p / CONFIG).exists() and not (p / CHECKPOINT).exists() and not list(p.glob("*.tmp"))
        assert json.loads((p / CARRIED).read_text())["minutes"] == pytest.approx(minutes(d))
        assert (p / POLICY).exists() == (d != chain[0])
    assert m["unfinished_left_out"] == []
    (root / "sft-half").mkdir()  # a run killed before it finished
    assert carry.pack(root, pack) == {**m, "unfinished_left_out": ["sft-half"]}  # replaces the pack
    shutil.rmtree(root / "sft-half")
    with pytest.raises(ValueError, match="pack elsewhere"):
        carry.pack(root, root / "carried")
    with pytest.raises(ValueError, match="is not a pack"):  # carried/ itself, holding other packs: never wiped
        carry.pack(root, pack.parent)
    assert m["code_versions"] == [code_version()] and (pack / "carry.json").exists()
    write_csv([{"condition": "base", "run": chain[0].name}], tmp_path / "table.csv")
    only = carry.pack(root, tmp_path / "only", [tmp_path / "table.csv"])  # a finished study's table
    assert only["weights_kept"] == [chain[0].name] and not (tmp_path / "only" / chain[-1].name / POLICY).exists()

    shutil.rmtree(root)  # the machine is gone; the pack came back with git
    (root / chain[-1].name).mkdir(parents=True)  # an interrupted run of the tip's config: replaced
    shutil.copytree(pack / chain[0].name, root / (chain[0].name + carry.UNPACKING))  # a killed unpack's
    assert carry.finished_runs(root) == []  # a run still being copied is not a run
    assert carry.unpack(pack) == (root.absolute(), sorted([*chain, leaf]))
    assert carry.unpack(pack)[1] == []  # never over a finished run
    assert not list(root.glob("*" + carry.UNPACKING))
    assert all(is_finished(d, cfg) for d, cfg in zip(chain, state["configs"]))
    monkeypatch.setattr("experiments.runs._train", lambda *a, **k: pytest.fail("nothing may retrain"))
    again = fair.plateau_bases("tiny", [(0, 0)], str(root))[(0, 0)]
    assert again["chain"] == chain and again["checks"] == state["checks"] and again["gain"] == state["gain"]
    assert [minutes(d) for d in again["chain"]] == pytest.approx([minutes(d) for d in chain])
    split = fair.split_spec("tiny", 0)
    # a new evaluation needs weights: a spent run's fails, naming it
    with pytest.raises(FileNotFoundError, match=f"{chain[0]}: its weights were left behind"):
        posthoc_eval(chain[0], split, ("seen",), 3, 0)
    assert read_config(chain[-1]) == state["configs"][-1].to_dict()
    repacked = carry.pack(root, tmp_path / "again")  # a carried cache packs again as it came
    assert {k: v for k, v in repacked.items()} == m
    assert all((tmp_path / "again" / d.name / CARRIED).read_text() == (pack / d.name / CARRIED).read_text()
               for d in chain)


def test_unpack_leaves_a_run_that_is_training_alone(tmp_path):
    import fcntl

    src = tmp_path / "cache"
    _run(src, "sft-a")
    carry.pack(src, tmp_path / "p")
    shutil.rmtree(src / "sft-a")
    (src / "sft-a").mkdir()
    with open(src / "sft-a" / ".lock", "w") as lock:  # a trainer holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert carry.unpack(tmp_path / "p")[1] == [] and not (src / "sft-a" / POLICY).exists()
    assert carry.unpack(tmp_path / "p")[1] == [src / "sft-a"] and (src / "sft-a" / POLICY).exists()


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
        carry.main(["pack", str(tmp_path / "t.csv"), "p", "--weights-for", str(tmp_path / "t.csv")])
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit):
        carry.main(["pack", str(tmp_path / "runs"), str(tmp_path / "p"), "--weights-for", str(tmp_path / "t.csv")])
    assert "not a CSV with a 'run' column" in capsys.readouterr().err and not (tmp_path / "p").exists()
