"""Cached training runs: one run directory per full config, named by the config's hash.

    d = sft_run(SFTConfig(...), root="runs")          # trains, or re-uses runs/sft-<hash>
    g = grpo_run(GRPOConfig(init=str(d), ...), root)  # likewise; init names the SFT run by its path
    results = run_all(jobs, workers=2)                 # independent jobs on a process pool

A run is re-used only when its directory holds a finished policy *and* the config it recorded is
exactly the requested one, so a changed config never gets a stale run; a directory with a
checkpoint but no policy is an interrupted run and resumes. The directory name holds a hash of
every field of the config (evaluation sizes included: they change the numbers a figure reads)
and ``code_version()``, a hash of the training code, so a code change never re-uses a run made by
other code: such runs are left in place, named on stderr, and the run is made again.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from hlsm.checkpoint import CHECKPOINT, CONFIG, POLICY, read_config, run_formats

# hlsm files that cannot change a training or evaluation result (tools around the runs)
NOT_RUN_CODE = ("identify", "__main__.py", "cli.py", "demo.py", "integrations", "tensorboard.py")


@functools.cache
def code_version(*packages: str) -> str:
    """A short hash of the code a result depends on: every source file of ``packages`` (default:
    hlsm, with its vocabulary) except ``NOT_RUN_CODE``."""
    import importlib

    h = hashlib.sha256()
    for name in packages or ("hlsm",):
        pkg = Path(importlib.import_module(name).__file__).parent
        for path in sorted([*pkg.rglob("*.py"), *pkg.glob("*.json")]):
            rel = path.relative_to(pkg).as_posix()
            if rel.split("/")[0] in NOT_RUN_CODE or "__pycache__" in rel:
                continue
            h.update(f"{name}/{rel}".encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def config_key(kind: str, config: dict) -> str:
    """A short stable hash of a run's kind and full config (JSON, sorted keys)."""
    blob = json.dumps({"kind": kind, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(kind: str, cfg, root) -> Path:
    """``root/<kind>-<config hash>-<code version>``."""
    return Path(root) / f"{kind}-{config_key(kind, cfg.to_dict())}-{code_version()}"


def stale_runs(kind: str, cfg, root) -> list[Path]:
    """Runs of the same config made by other code (older names carry no code version)."""
    key = config_key(kind, cfg.to_dict())
    here = run_dir(kind, cfg, root)
    return sorted(p for p in Path(root).glob(f"{kind}-{key}*") if p != here and p.is_dir() and "." not in p.name)


# in a run directory carried to another machine (``experiments.carry``): its wall minutes and whether
# its weights were left behind (a spent run: later runs already started from it)
CARRIED = "carried.json"


def weights_dropped(run: Path) -> bool:
    """``run`` was carried to this machine without its weights, on purpose (a spent run)."""
    return (Path(run) / CARRIED).exists() and json.loads((Path(run) / CARRIED).read_text())["weights_dropped"]


def is_finished(out: Path, cfg) -> bool:
    """A finished run of exactly this config lives in ``out`` (its weights may have been left behind
    by ``experiments.carry``)."""
    if not ((out / POLICY).exists() or weights_dropped(out)):
        return False
    return read_config(out) == cfg.to_dict()


def minutes(run: Path) -> float:
    """Wall minutes of a run: from its config.json (written at start) to its policy.pt (at the end), or as
    recorded when it was carried (file times do not survive git)."""
    if (Path(run) / CARRIED).exists():
        return json.loads((Path(run) / CARRIED).read_text())["minutes"]
    return ((Path(run) / POLICY).stat().st_mtime - (Path(run) / CONFIG).stat().st_mtime) / 60


LOCK = ".lock"  # in a run directory: held (flock) by the process training it


def _train(kind: str, cfg, root, threads: int = 0, snapshot_every: int = 0) -> Path:
    out = run_dir(kind, cfg, root)
    if is_finished(out, cfg):
        return out
    out.mkdir(parents=True, exist_ok=True)
    # one trainer per directory: a second process asking for the same run (a restarted study beside
    # the workers of a killed one, two workers of a cluster) waits here, then finds it finished
    with open(out / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _train_locked(kind, cfg, root, out, threads, snapshot_every)


def _train_locked(kind: str, cfg, root, out: Path, threads: int, snapshot_every: int) -> Path:
    import torch

    if threads:
        torch.set_num_threads(threads)
    if is_finished(out, cfg):
        return out
    for old in stale_runs(kind, cfg, root):
        print(f"stale run {old} (made by other code than {code_version()}): not re-used, training "
              f"{out.name}", file=sys.stderr)
    resume = (out / CHECKPOINT).exists()
    if not resume:  # killed before its first checkpoint: nothing to resume (the lock file stays)
        for p in out.iterdir():
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    if kind == "sft":
        from hlsm.sft import train
    else:
        from hlsm.grpo import train
    train(cfg, out, resume=resume, progress=False, snapshot_every=snapshot_every)
    return out


def sft_run(cfg, root="runs", threads: int = 0) -> Path:
    """The directory of a finished SFT run of ``cfg`` under ``root`` (trained or resumed if needed)."""
    return _train("sft", cfg, root, threads)


def grpo_run(cfg, root="runs", threads: int = 0) -> Path:
    """The directory of a finished GRPO run of ``cfg`` under ``root`` (trained or resumed if needed)."""
    return _train("grpo", cfg, root, threads)


def run_all(jobs: list[tuple[str, object]], root="runs", workers: int = 0,
            progress: bool = True, snapshot_every: int = 0) -> list[Path]:
    """Run ``(kind, cfg)`` jobs (kind "sft" or "grpo") that do not depend on each other.

    They run on the launcher of ``experiments.launch`` (a local process pool of ``workers``, one torch
    thread each -- small models train faster as parallel single-thread jobs than as one multi-thread
    job -- or one Ray task each); results keep job order. A run that fails is named with its error and
    directory after the others finish (``RunsFailed``). ``snapshot_every`` > 0 keeps policies along
    training (``hlsm.checkpoint.snapshots``).
    """
    from experiments import launch
    from hlsm.runloop import progress_bar

    out = [run_dir(kind, cfg, root) for kind, cfg in jobs]
    # one job per run directory: two names for one config (e.g. a variant equal to its base) train once
    first = {d: i for i, d in reversed(list(enumerate(out)))}
    todo = [i for i, (kind, cfg) in enumerate(jobs) if first[out[i]] == i and not is_finished(out[i], cfg)]
    kinds = Counter(jobs[i][0] for i in todo)  # one bar per phase: what it trains, done / total, ETA
    bar = progress_bar(total=len(todo), disable=not progress or not todo, unit="run",
                       desc="training " + " + ".join(f"{n} {k}" for k, n in kinds.items()))
    here = launch.in_process(workers, len(todo))
    threads = 0 if here else 1  # in this process: the study's own --threads
    # a worker on another machine gets an absolute root (the shared path), never this process's cwd
    where = root if here else str(Path(root).resolve())
    if not here:
        bar.set_postfix_str(f"{launch.current().name} launcher")

    def done(k):
        bar.set_postfix_str(f"finished {out[todo[k]].name}")
        bar.update(1)

    results = launch.map_jobs(_train, [(*jobs[i], where, threads, snapshot_every) for i in todo], workers,
                              gpus=[gpus_of(jobs[i][1]) for i in todo] if launch.current().name == launch.RAY else None,
                              done=done, names=[str(out[i]) for i in todo])
    bar.close()
    launch.raise_failures(results, "runs")
    return out


def gpus_of(cfg) -> float:
    """GPUs a run asks a Ray cluster for: one when its config says cuda, or auto on a cluster that has GPUs."""
    from experiments.launch import ray_runtime

    device = getattr(cfg, "device", "cpu")
    if device == "cuda" or device.startswith("cuda:"):
        return 1.0
    return 1.0 if device == "auto" and ray_runtime().cluster_resources().get("GPU", 0) > 0 else 0.0


def die_with_parent() -> None:
    """A pool worker's initializer: on Linux the worker gets SIGTERM when the study that started it dies,
    instead of training on as an orphan (elsewhere a no-op; the run lock still keeps trainers apart)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def posthoc_eval(run: Path, split_spec: dict, supports: tuple[str, ...], n: int, seed: int,
                 by: tuple[str, ...] = ("all", "depth"), threads: int = 1, samples: int = 0) -> list[dict]:
    """Evaluate a finished run's policy on supports of another split spec (e.g. more depths).

    Cached in the run directory by a hash of the arguments, so figures re-read instead of
    re-scoring. The items are those of ``hlsm.evaluate.evaluate`` with the same seed and n.
    ``samples`` > 0 also draws that many completions per item at T = 1: columns ``pass@1`` (the
    mean sampled accuracy) and ``pass@<samples>``.
    """
    import csv

    import torch

    from hlsm.checkpoint import load_policy
    from hlsm.evaluate import evaluate, write_csv
    from hlsm.sft import make_split

    key = config_key("posthoc", {"split": split_spec, "supports": list(supports), "n": n, "seed": seed,
                                 "by": list(by), "code": code_version(), **({"samples": samples} if samples else {})})
    path = Path(run) / f"posthoc-{key}.csv"
    if path.exists():
        with open(path) as f:
            return list(csv.DictReader(f))
    if threads:
        torch.set_num_threads(threads)
    if weights_dropped(run):
        raise FileNotFoundError(f"{run}: its weights were left behind when it was packed (experiments.carry: "
                                f"a spent run); evaluate it where it was trained, before packing")
    model, _ = load_policy(run)
    rows = evaluate(model, make_split(split_spec), supports, n=n, seed=seed, by=by, samples=samples,
                    pass_k=(1, samples) if samples else (), **run_formats(run))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two processes may evaluate the same run
    write_csv(rows, tmp)
    os.replace(tmp, path)
    with open(path) as f:
        return list(csv.DictReader(f))


def cached_json(run: Path, kind: str, args: dict, compute, *call_args):
    """``compute(*call_args)``'s JSON-able result, cached in the run directory by a hash of ``kind``,
    ``args`` and the code."""
    # probes and figure code compute these values: they are part of the key
    key = config_key(kind, {**args, "code": code_version("hlsm", "probes", "experiments")})
    path = Path(run) / f"{kind}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = compute(*call_args)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, default=float))
    os.replace(tmp, path)
    return value
