"""Every command line answers bad input with one line naming the bad value, exit status 2, no
traceback, and nothing written (issue 18)."""

import json

import pytest

from hlsm import __main__ as hlsm_cli
from hlsm import checkpoint, grpo, sft
from hlsm.cli import field_comments
from hlsm.identify import cli as identify_cli


def _fails(main, argv, capsys, *needles):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize("flags, needles", [
    (["--preset", "nosuch"], ["'nosuch'", "smoke"]),
    (["--lr", "-1"], ["SFTConfig.lr", "-1"]),
    (["--steps", "0"], ["SFTConfig.steps", ">= 1"]),
    (["--fmt", "nosuch"], ["'nosuch'", "explicit"]),
    (["--model", "{bad"], ["--model", "not valid JSON", "{bad"]),
    (["--device", "cuda:7" if __import__("torch").cuda.is_available() else "cuda"], ["device", "cuda"]),
    (["--init", "/no/such/run"], ["/no/such/run", "policy.pt"]),
])
def test_sft_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, needles):
    out = tmp_path / "run"
    err = _fails(sft.main, ["--out", str(out), *flags], capsys, *needles)
    assert not out.exists(), err


@pytest.mark.parametrize("flags, needles", [
    ([], ["--init", "required"]),
    (["--init", "/no/such/run"], ["/no/such/run", "config.json"]),
    (["--lr", "-1"], ["GRPOConfig.lr"]),
    (["--loss-agg", "mean"], ["'mean'", "seq_mean"]),
    (["--preset", "nosuch"], ["'nosuch'", "smoke"]),
])
def test_grpo_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, flags, needles):
    out = tmp_path / "run"
    _fails(grpo.main, ["--out", str(out), *flags], capsys, *needles)
    assert not out.exists()


def test_grpo_refuses_a_grpo_run_as_init(tmp_path, capsys):
    run = tmp_path / "grpo-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"init": "x", "group_size": 8}}))
    (run / "policy.pt").write_bytes(b"")
    _fails(grpo.main, ["--out", str(tmp_path / "o"), "--init", str(run)], capsys, "a GRPO run", "SFT run")


def test_identify_bad_files_are_named(tmp_path, capsys):
    _fails(identify_cli.main, [str(tmp_path / "nosuch.json")], capsys, "nosuch.json", "No such file")
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,')
    _fails(identify_cli.main, [str(bad)], capsys, "bad.json", "not valid JSON", "line 1")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('[["chain", "nosuch"]]')
    _fails(identify_cli.main, [str(wrong)], capsys, "wrong.json")


def test_hlsm_cli_names_modules_and_supports(tmp_path, capsys):
    err = _fails(hlsm_cli.main, ["split", "heldout", "--heldout", "sortasc", "--out", str(tmp_path / "s.json")],
                 capsys, "'sortasc'", "sort_asc", "map_halves")
    assert not (tmp_path / "s.json").exists(), err
    assert hlsm_cli.main(["split", "compositional", "--out", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    err = _fails(hlsm_cli.main, ["sample", "--split", str(tmp_path / "s.json"), "--support", "nosuch", "--out",
                                 str(tmp_path / "x.jsonl")], capsys, "'nosuch'", "eval_atoms")
    assert err.count("'atoms'") == 1


def test_checkpoint_convert_names_a_missing_file(tmp_path, capsys):
    _fails(checkpoint.main, ["convert", str(tmp_path / "nope.pt")], capsys, "nope.pt")


def test_trainer_help_shows_choices_defaults_and_meaning(capsys):
    with pytest.raises(SystemExit):
        sft.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fmt {explicit,values,answer}" in text and "--preset {smoke,cpu,paper}" in text
    assert "peak AdamW learning rate [default 0.003; smoke: 0.003, cpu: 0.001" in text
    with pytest.raises(SystemExit):
        grpo.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--loss-agg {seq_mean,token_mean,constant}" in text and "--rewards JSON" in text
    # every field of both configs has a line of meaning
    for cfg in (sft.SFTConfig, grpo.GRPOConfig):
        comments = field_comments(cfg)
        assert all(comments.get(f) for f in cfg.__dataclass_fields__), cfg


def test_every_split_factory_is_a_cli_command(tmp_path, capsys):
    from hlsm.support import SPLIT_FACTORIES, Split

    required = {"heldout": ["--heldout", "reverse"]}
    for name in SPLIT_FACTORIES:  # every factory's signature must map to flags
        assert hlsm_cli.main(["split", name, *required.get(name, []), "--out", str(tmp_path / f"{name}.json")]) == 0
    assert hlsm_cli.main(["split", "planted", "--together", "false", "--out", str(tmp_path / "apart.json")]) == 0
    assert Split.load(tmp_path / "apart.json").name.startswith("planted-apart")
    capsys.readouterr()
    _fails(hlsm_cli.main, ["split", "planted", "--together", "maybe", "--out", str(tmp_path / "x.json")], capsys,
           "'maybe'", "true or false")
    assert not (tmp_path / "x.json").exists()


EXPERIMENTS = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fair", "compound", "regime", "protocol",
               "planted", "all")


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("flags, needles", [
    (["--preset", "nosuch"], ["'nosuch'", "--preset"]),
    (["--workers", "-1"], ["'-1'", "--workers"]),
    (["--threads", "two"], ["'two'", "--threads"]),
])
def test_every_experiment_answers_bad_input_in_one_line(tmp_path, capsys, name, flags, needles):
    import importlib

    main = importlib.import_module(f"experiments.{name}").main
    _fails(main, [*flags, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")], capsys, *needles)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_threads_default_to_one_and_take_effect_as_parsed():
    """One torch thread per process unless asked: torch's default collapses when cores are shared."""
    import torch

    from experiments.report import figure_parser
    from hlsm.cli import THREADS

    before = torch.get_num_threads()
    try:
        a = figure_parser("prog", "doc").parse_args([])
        assert a.threads == THREADS and torch.get_num_threads() == THREADS
        figure_parser("prog", "doc").parse_args(["--threads", "2"])
        assert torch.get_num_threads() == 2
        figure_parser("prog", "doc").parse_args(["--threads", "0"])  # 0: leave torch's setting alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_progress_off_a_terminal_is_a_line_every_few_percent(capsys):
    """Written to a log file, a bar writes whole lines, about PROGRESS_LINES of them, not one per update."""
    from hlsm.runloop import PROGRESS_LINES, progress_bar

    bar = progress_bar(total=1000, desc="sft")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.split("\n")
    assert "\r" not in "".join(lines) and lines[-1] == ""
    assert PROGRESS_LINES <= len(lines) - 1 <= PROGRESS_LINES + 3 and lines[-2].startswith("sft: 100%")
