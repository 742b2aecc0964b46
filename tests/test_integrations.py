"""Integrations: datasets round trip, TRL reward functions and a 2-step GRPOTrainer run, the
reasoning-gym adapter, and the command line. Tests of a missing optional package are skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import hlsm  # noqa: E402
from hlsm.__main__ import main as cli  # noqa: E402
from hlsm.integrations import example_row, generator, instruction, load_split, require  # noqa: E402
from hlsm.integrations.trl import FUNCS, reward_funcs  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SPLIT = {"factory": "compositional", "depth": 2, "routings": ["chain"], "deeper": [],
         "skills": ["reverse", "rotate_left", "shift_up", "swap_pairs"]}
NAMES = ["hlsm_answer", "hlsm_format", "hlsm_structure"]


def columns(rows: list[dict]) -> dict:
    """Dataset rows as TRL passes them to reward functions: one list per column."""
    return {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "completion")}


def test_hlsm_imports_no_optional_package():
    code = ("import sys, hlsm, hlsm.integrations, hlsm.integrations.trl, hlsm.__main__\n"
            "bad = {'datasets', 'trl', 'transformers', 'reasoning_gym', 'tokenizers'} & set(sys.modules)\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_package_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hlsm\[hf\]'"):
        require("datasets", "hlsm.integrations.hf")


def test_sources_and_bad_values():
    split = load_split(SPLIT)
    assert generator(split, "rl").stream == "train:rl"  # the stream GRPO draws its prompts from
    assert generator(split, "unseen").stream == "eval:unseen"  # the items evaluate scores
    assert generator(None, depth=2).support.depths == (2,)
    with pytest.raises(ValueError, match="support_name"):
        generator(split)
    with pytest.raises(ValueError, match="'nope'"):
        generator(split, "nope")
    with pytest.raises(ValueError, match="'bogus'"):
        load_split({"factory": "bogus"})
    with pytest.raises(ValueError, match="missing.json"):
        load_split("missing.json")
    with pytest.raises(ValueError, match="'bogus'"):
        instruction("bogus")


@pytest.mark.parametrize("fmt,g", [("values", 1), ("explicit", 1), ("answer", 1), ("values", 2), ("explicit", 2)])
def test_reward_funcs_match_hlsm_rewards(fmt, g):
    examples = hlsm.HLSM(depth=(1, 3), seed=1, fmt=fmt, granularity=g).sample(12)
    rows = [example_row(ex) for ex in examples]
    cols = columns(rows)
    wrong = [ex.completion[:-1] + ("a" if ex.completion[-1] != "a" else "b") for ex in examples]
    chopped = [ex.completion[: len(ex.completion) // 2] + "#" + ex.answer for ex in examples]
    for texts in ([ex.completion for ex in examples], wrong, chopped):
        for name, fn in FUNCS.items():
            want = [hlsm.REWARDS[name](ex, t) for ex, t in zip(examples, texts)]
            assert fn(prompts=None, completions=texts, **cols) == want
            chat = [[{"role": "assistant", "content": " " + t + "\n"}] for t in texts]
            assert fn(prompts=None, completions=chat, **cols, trainer_state=None) == want
    golden = [ex.completion for ex in examples]
    assert all(r == 1.0 for fn in FUNCS.values() for r in fn(None, golden, **cols))


def test_reward_funcs_names_weights_and_garbage():
    assert [f.__name__ for f in reward_funcs()] == NAMES
    weighted = reward_funcs({"answer": 2.0, "hlsm_structure": 1})
    assert [f.__name__ for f in weighted] == ["hlsm_answer", "hlsm_structure"]
    ex = hlsm.HLSM(depth=3, seed=0)[0]
    cols = columns([example_row(ex)])
    assert weighted[0](None, [ex.completion], **cols) == [2.0]
    garbage = [None, 123, "", "S99##;", "#", "a;b;#", [], {}, [{"role": "assistant", "content": None}],
               [{"role": "user", "content": ex.completion}], [{"content": [{"type": "text", "text": "x#y"}]}],
               [{"role": "assistant"}], ["not a message"], ex.completion.replace("#", "")]
    for fn in reward_funcs():
        assert fn(None, garbage, **columns([example_row(ex)] * len(garbage))) == [0.0] * len(garbage)
    with pytest.raises(ValueError, match="'bogus'"):
        reward_funcs({"bogus": 1.0})
    with pytest.raises(ValueError, match="selections"):
        reward_funcs()[0](None, [ex.completion], answer=[ex.answer])


# --- Hugging Face datasets ------------------------------------------------------------------


def test_dataset_columns_round_trip_and_rows(tmp_path):
    pytest.importorskip("datasets")
    from hlsm.integrations.hf import load, save, to_dataset

    split = load_split(SPLIT)
    ds = to_dataset(split, "unseen", n=40, seed=3)
    assert len(ds) == 40
    for col in ("prompt", "completion", "answer", "trace", "selections", "depth", "composition", "format",
                "granularity"):
        assert col in ds.column_names
    hlsm.export_jsonl((split, "unseen"), tmp_path / "rows.jsonl", n=40, seed=3)
    jsonl = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert ds["prompt"] == [r["prompt"] for r in jsonl] and ds["completion"] == [r["completion"] for r in jsonl]
    assert [json.loads(s) for s in ds["selections"]] == [r["selections"] for r in jsonl]
    assert json.loads(ds[0]["composition"]) == [[s["routing"], s["skill"]] for s in jsonl[0]["selections"]]
    save(ds, tmp_path / "plain")
    assert load(tmp_path / "plain").to_list() == ds.to_list()
    golden = ds["completion"]
    for fn in reward_funcs():
        assert fn(None, golden, **columns(ds.to_list())) == [1.0] * 40


def test_chat_dataset_is_well_formed(tmp_path):
    pytest.importorskip("datasets")
    from hlsm.integrations.hf import load, save, to_dataset

    for fmt, define in (("values", False), ("explicit", True)):
        ds = to_dataset(SPLIT, "rl", n=10, seed=0, format=fmt, chat=True, define_modules=define)
        plain = to_dataset(SPLIT, "rl", n=10, seed=0, format=fmt)
        for row, ref in zip(ds, plain):
            system, user = row["prompt"]
            assert [system["role"], user["role"]] == ["system", "user"]
            assert system["content"] == instruction(fmt) and "Example: abcd|R0S00 R2S09> -> " in system["content"]
            assert user["content"].startswith(ref["prompt"])
            assert ("h_0 is the input" in user["content"]) == define
            assert row["completion"] == [{"role": "assistant", "content": ref["completion"]}]
        save(ds, tmp_path / fmt)
        assert load(tmp_path / fmt).to_list() == ds.to_list()
        for fn in reward_funcs():
            assert fn(ds["prompt"], ds["completion"], **columns(ds.to_list())) == [1.0] * 10


# --- TRL ------------------------------------------------------------------------------------


def tiny_trainer(tmp_path, funcs, steps=2):
    from trl import GRPOConfig, GRPOTrainer

    from hlsm.integrations.hf import to_dataset
    from hlsm.integrations.trl import char_tokenizer, tiny_causal_lm

    tok = char_tokenizer()
    data = to_dataset(SPLIT, "rl", n=8, seed=0)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=12, learning_rate=1e-3, logging_steps=1, report_to=[],
                      save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, dataloader_num_workers=0,
                      seed=0)
    return GRPOTrainer(model=tiny_causal_lm(tok, layers=1), reward_funcs=funcs, args=args, train_dataset=data,
                       processing_class=tok)


def test_char_tokenizer_round_trips_hlsm_text():
    pytest.importorskip("transformers")
    from hlsm.integrations.trl import char_tokenizer

    tok = char_tokenizer()
    for ex in hlsm.HLSM(depth=3, seed=0, fmt="explicit").sample(5):
        text = ex.prompt + ex.completion
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids
        assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text


def test_grpo_trainer_two_steps_logs_our_rewards(tmp_path):
    pytest.importorskip("trl")
    from hlsm.integrations.trl import hlsm_answer

    calls = []

    class Spy:  # hlsm_answer, recording what TRL passes it
        __name__ = "hlsm_answer"

        def __call__(self, prompts, completions, **kwargs):
            calls.append((prompts, completions, kwargs))
            return hlsm_answer(prompts, completions, **kwargs)

    funcs = [Spy(), *reward_funcs()[1:]]
    trainer = tiny_trainer(tmp_path, funcs)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "reward" in log]
    assert len(logs) == 2 and trainer.state.global_step == 2
    for name in NAMES:
        assert all(f"rewards/{name}/mean" in log and f"rewards/{name}/std" in log for log in logs)
    assert len(calls) == 2
    prompts, completions, kwargs = calls[0]
    assert len(prompts) == len(completions) == 4 and all(isinstance(c, str) for c in completions)
    golden = [t + "#" + a for t, a in zip(kwargs["trace"], kwargs["answer"])]
    assert hlsm_answer(prompts, golden, **kwargs) == [1.0] * 4  # the columns TRL passes suffice


def test_example_script_runs_tiny(tmp_path, capsys):
    pytest.importorskip("trl")
    import importlib.util

    spec = importlib.util.spec_from_file_location("trl_grpo", ROOT / "examples" / "trl_grpo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # the default warm start teaches the random tiny model the trace format: rewards are not all 0
    trainer = example.main(["--tiny", "--steps", "2", "--prompts", "4", "--group", "4", "--max-completion-length",
                            "32", "--lr", "1e-3", "--out", str(tmp_path)])
    assert trainer.state.global_step == 2 and (tmp_path / "config.json").exists()
    assert "rewards/hlsm_answer/mean" in capsys.readouterr().out
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    assert len(rewards) == 2 and max(rewards) > 0, rewards
    with pytest.raises(SystemExit) as e:
        example.parse_args(["--tiny", "--steps", "0", "--out", str(tmp_path)])
    assert e.value.code == 2


# --- reasoning-gym --------------------------------------------------------------------------


def test_reasoning_gym_adapter():
    reasoning_gym = pytest.importorskip("reasoning_gym")
    from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec
    from reasoning_gym.dataset import ProceduralDataset

    from hlsm.integrations.reasoning_gym import HLSMDataset, HLSMDatasetConfig

    data = reasoning_gym.create_dataset("hlsm", depth=3, seed=7, size=20)
    assert isinstance(data, HLSMDataset) and isinstance(data, ProceduralDataset) and len(data) == 20
    items = list(data)
    assert items == list(HLSMDataset(HLSMDatasetConfig(depth=3, seed=7, size=20)))  # same seed, same items
    assert items != list(HLSMDataset(HLSMDatasetConfig(depth=3, seed=8, size=20)))
    assert [e["metadata"]["prompt"] for e in items] == [ex.prompt for ex in hlsm.HLSM(depth=3, seed=7).sample(20)]
    for entry in items:
        assert set(entry) == {"question", "answer", "metadata"} and entry["metadata"]["prompt"] in entry["question"]
        json.dumps(entry)
        assert data.score_answer(entry["answer"], entry) == 1.0
        assert data.score_answer(f" {entry['metadata']['completion']}\n", entry) == 1.0
        bad = entry["answer"][:-1] + ("a" if entry["answer"][-1:] != "a" else "b")  # answers may be empty
        for wrong in (bad, entry["answer"] + "a", None, 3, *([""] if entry["answer"] else [])):
            assert data.score_answer(wrong, entry) == 0.0
    composite = CompositeDataset(CompositeConfig(size=12, seed=1, datasets=[
        DatasetSpec("hlsm", 1.0, {"split": SPLIT, "support": "unseen"}),
        DatasetSpec("string_manipulation", 1.0, {}),
    ]))
    sources = [e["metadata"]["source_dataset"] for e in composite]
    assert "hlsm" in sources and all(composite.score_answer(e["answer"], e) == 1.0 for e in composite)
    with pytest.raises(ValueError, match="'nope'"):
        HLSMDataset(HLSMDatasetConfig(split=SPLIT, support="nope"))


def test_reasoning_gym_adapter_without_reasoning_gym():
    code = ("import sys; sys.modules['reasoning_gym'] = None\n"
            "from hlsm.integrations.reasoning_gym import HLSMDataset, HLSMDatasetConfig\n"
            "d = HLSMDataset(HLSMDatasetConfig(seed=0, size=3)); e = d[0]\n"
            "assert len(list(d)) == 3 and d.score_answer(e['answer'], e) == 1.0\n"
            "assert d.score_answer(e['answer'] + 'x', e) == 0.0")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- command line ---------------------------------------------------------------------------


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_cli_sample_writes_jsonl(tmp_path):
    out = tmp_path / "d.jsonl"
    run = subprocess.run([sys.executable, "-m", "hlsm", "sample", "--depth", "3", "--n", "25", "--seed", "1",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = read_jsonl(out)
    assert len(rows) == 25
    for row in rows:
        assert {"prompt", "completion", "answer", "trace", "selections"} <= set(row) and len(row["selections"]) == 3
    assert [r["prompt"] for r in rows] == [ex.prompt for ex in hlsm.HLSM(depth=3, seed=1).sample(25)]


def test_cli_split_then_sample(tmp_path, capsys):
    path = tmp_path / "split.json"
    assert cli(["split", "compositional", "--depth", "2", "--deeper", "3", "--skills", "reverse", "shift_up",
                "--out", str(path)]) == 0
    printed = capsys.readouterr().out
    split = hlsm.Split.load(path)
    assert split.check_disjoint()[0] in printed and "eval unseen vs train sft: compositions disjoint" in printed
    assert cli(["split", "heldout", "--heldout", "sort_asc", "--out", str(tmp_path / "h.json")]) == 0
    assert cli(["sample", "--split", str(path), "--support", "unseen", "--n", "30", "--format", "explicit",
                "--out", str(tmp_path / "u.jsonl")]) == 0
    rows = read_jsonl(tmp_path / "u.jsonl")
    assert len(rows) == 30 and all(r["format"] == "explicit" for r in rows)
    unseen = split.support("unseen")
    assert all(unseen.contains_item(r["x"], [(s["routing"], s["skill"]) for s in r["selections"]]) for r in rows)


@pytest.mark.parametrize("argv,named", [
    (["sample", "--format", "bogus"], "'bogus'"),
    (["sample", "--n", "abc"], "'abc'"),
    (["sample", "--n", "0"], "got 0"),
    (["sample", "--depth", "0"], "got 0"),
    (["sample", "--granularity", "0"], "got 0"),
    (["sample", "--support", "unseen"], "--split"),
    (["sample", "--split", "missing.json", "--support", "unseen"], "missing.json"),
    (["split", "compositional", "--skills", "reverse", "flip"], "'flip'"),
    (["split", "compositional", "--heldout", "400", "1000"], "overlap"),
    (["split", "heldout"], "--heldout"),
    (["split", "bogus"], "'bogus'"),
])
def test_cli_rejects_bad_flags(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli([*argv, "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_sample_rejects_unknown_support(tmp_path, capsys):
    split = tmp_path / "s.json"
    load_split(SPLIT).save(split)
    with pytest.raises(SystemExit) as e:
        cli(["sample", "--split", str(split), "--support", "nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "'nope'" in capsys.readouterr().err
