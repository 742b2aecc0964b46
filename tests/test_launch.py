"""Launchers (experiments.launch): the local pool and a real local Ray runtime give the same files, a
failed run is named while the others finish, and a study killed on Ray resumes on the local pool."""

import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import fig1, launch
from experiments.runs import gpus_of, is_finished, run_all, run_dir
from hlsm.checkpoint import CHECKPOINT
from tests.test_sft import tiny_cfg

RESULT_FILES = ("fig1.csv", "table1.csv", "table1.md", "fig1.png")  # fig1.json also holds wall time and flags
TINY = ["--preset", "tiny", "--seeds", "0", "--splits", "0"]


@pytest.fixture
def on_ray():
    """A real Ray runtime with 2 CPUs on this machine (started once per session), as the launcher."""
    pytest.importorskip("ray")
    yield launch.use(launch.RAY, cpus=2)
    launch.use(launch.LOCAL)


@pytest.fixture(scope="session", autouse=True)
def _stop_ray():
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def test_bad_launchers_are_one_line_before_anything_runs():
    with pytest.raises(ValueError, match=r"launcher 'slurm': must be one of \('local', 'ray'\)"):
        launch.use("slurm")
    with pytest.raises(ValueError, match="needs --launcher ray"):
        launch.use(launch.LOCAL, address="auto")
    assert launch.current().name == launch.LOCAL


def test_experiments_import_without_ray_and_say_how_to_get_it():
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "import experiments.fig1, experiments.fair\nfrom experiments import launch\n"
            "try:\n    launch.use('ray')\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == launch.RAY_MISSING
    rc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['ray'] = None\n"
                         "from experiments import fig1; fig1.main(['--launcher', 'ray'])"],
                        capture_output=True, text=True)
    assert rc.returncode == 2 and rc.stderr.strip().endswith("pip install 'ray>=2.9') (see --help)")


def test_a_run_asks_ray_for_a_gpu_only_when_its_config_says_cuda():
    assert gpus_of(tiny_cfg(device="cuda")) == 1.0 and gpus_of(tiny_cfg(device="cpu")) == 0.0


def _failing_study(root):
    good = tiny_cfg(split=tiny_cfg().split.to_dict(), steps=20)
    bad = tiny_cfg(split=tiny_cfg().split.to_dict(), steps=20, init=str(root / "no_such_run"))
    return good, bad


@pytest.mark.parametrize("where", [launch.LOCAL, launch.RAY])
def test_a_failed_run_is_named_the_others_finish_and_a_rerun_trains_only_what_is_missing(tmp_path, where, request):
    if where == launch.RAY:
        request.getfixturevalue("on_ray")
    good, bad = _failing_study(tmp_path)
    with pytest.raises(launch.RunsFailed) as e:
        run_all([("sft", good), ("sft", bad)], tmp_path, workers=2, progress=False)
    msg = str(e.value)
    assert msg.startswith("1 of 2 runs failed") and msg.count("\n  ") == 1
    assert f"{run_dir('sft', bad, tmp_path)}: ValueError: SFTConfig.init: " in msg  # its directory and its error
    assert is_finished(run_dir("sft", good, tmp_path), good)
    stamp = (run_dir("sft", good, tmp_path) / "policy.pt").stat().st_mtime_ns
    with pytest.raises(launch.RunsFailed):
        run_all([("sft", good), ("sft", bad)], tmp_path, workers=2, progress=False)
    assert (run_dir("sft", good, tmp_path) / "policy.pt").stat().st_mtime_ns == stamp  # not trained again


def test_a_study_with_a_failed_run_exits_1_naming_it_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from tests.test_launch import _exit_of_failing_study as f; f()"],
                          capture_output=True, text=True, env={**os.environ, "ROOT": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 of 2 runs failed" in proc.stderr and "no_such_run" in proc.stderr


def _exit_of_failing_study():
    from pathlib import Path

    from experiments.report import run_cli

    def main():  # a study's main whose second run fails
        run_all([("sft", c) for c in _failing_study(Path(os.environ["ROOT"]))], os.environ["ROOT"], workers=1,
                progress=False)
        return 0

    raise SystemExit(run_cli(main))


@pytest.mark.slow
def test_fig1_tiny_gives_byte_identical_files_under_local_and_ray(smoke_figures, tmp_path, on_ray):
    local, _ = smoke_figures  # fig1 --preset tiny on the local launcher, one process
    out = tmp_path / "out"
    assert fig1.main([*TINY, "--runs", str(tmp_path / "runs"), "--out", str(out), "--workers", "2",
                      "--launcher", "ray"]) == 0
    for name in RESULT_FILES:
        assert (out / name).read_bytes() == (local / "out" / name).read_bytes(), name


@pytest.mark.slow
def test_a_study_killed_on_ray_resumes_on_the_local_pool(smoke_figures, tmp_path):
    """Killed (SIGKILL to its process group, Ray's processes included) once its first run has a
    checkpoint; the same command on the other launcher trains only what is missing, same bytes."""
    pytest.importorskip("ray")
    local, _ = smoke_figures
    flags = [*TINY, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    study = subprocess.Popen([sys.executable, "-m", "experiments.fig1", *flags, "--workers", "2", "--launcher", "ray"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob(f"*/{CHECKPOINT}")) and study.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(study.pid, signal.SIGKILL)
    study.wait()
    assert study.returncode == -signal.SIGKILL, "the study ended before it could be killed"
    assert fig1.main([*flags, "--workers", "1"]) == 0
    for name in RESULT_FILES:
        assert (tmp_path / "out" / name).read_bytes() == (local / "out" / name).read_bytes(), name
