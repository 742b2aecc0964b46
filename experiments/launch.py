"""Where a study's jobs run: ``local`` (a process pool on this machine, the default) or ``ray`` (one Ray
task per job, on a Ray runtime started here or on a cluster already running).

    python -m experiments.fig1 --launcher ray                          # a Ray runtime on this machine
    python -m experiments.fig1 --launcher ray --ray-address auto       # the cluster this node is part of
    python -m experiments.fig1 --launcher ray --ray-address ray://head:10001 --runs /shared/runs

Every study reaches its jobs through ``experiments.runs.run_all`` (training runs) and
``experiments.engine.parallel`` (evaluations); both hand them to ``map_jobs``, which runs them on the
launcher chosen with ``use`` (the figures' ``--launcher`` flag). The run cache stays the one source of
truth: a run directory is trained by whichever worker gets it, under the run's lock, and a study
interrupted on one launcher resumes on the other. A job that fails is named with its error; the
others finish, and the study then raises ``RunsFailed`` (exit status 1 on the command line).
Ray is an optional extra (``pip install 'hlsm[ray]'``); nothing here imports it unless asked.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context

LOCAL, RAY = "local", "ray"
LAUNCHERS = (LOCAL, RAY)
RAY_NICENESS = "RAY_worker_niceness"  # read by a Ray runtime as it starts; a cluster sets it in its own env
RAY_MISSING = "--launcher ray needs Ray: pip install 'hlsm[ray]' (or pip install 'ray>=2.9')"


@dataclass
class Launcher:
    name: str = LOCAL  # one of LAUNCHERS
    address: str | None = None  # ray only: None starts a runtime on this machine; "auto" or "ray://host:port" joins one
    cpus: int = 0  # ray only, runtime started here: CPUs it offers (0: every core)


_current = Launcher()


class RunsFailed(RuntimeError):
    """Some jobs of a study failed (each named with its error); the others finished and are cached."""


@dataclass
class Failed:
    """The outcome of a job that raised: what it was and the error, one line."""
    job: str
    error: str


def use(name: str = LOCAL, address: str | None = None, cpus: int = 0) -> Launcher:
    """Run later jobs on launcher ``name``; a bad name or a missing Ray is one line (``ValueError``)
    before anything runs. The Ray runtime itself starts (or is joined) at the first job."""
    if name not in LAUNCHERS:
        raise ValueError(f"launcher {name!r}: must be one of {LAUNCHERS}")
    if address is not None and name != RAY:
        raise ValueError(f"--ray-address {address!r} needs --launcher ray")
    if name == RAY:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError(RAY_MISSING) from None
    global _current
    _current = Launcher(name, address, cpus)
    return _current


def current() -> Launcher:
    return _current


def in_process(workers: int, n_jobs: int) -> bool:
    """Whether ``map_jobs`` runs the jobs one after another in this process (the caller's torch threads)
    rather than in single-thread workers."""
    return _current.name == LOCAL and (workers <= 1 or n_jobs <= 1)


def map_jobs(fn, jobs: list[tuple], workers: int = 0, gpus: list[float] | None = None, done=None,
             names: list[str] | None = None) -> list:
    """``[fn(*job) for job in jobs]`` on the current launcher, in job order; a job that raised gives a
    ``Failed`` in its place (the others still run). ``fn`` must be a module-level function (workers
    import it); ``gpus[i]``: GPUs job i asks for (Ray only; default none); ``done(i)`` is called as
    each job ends; ``names[i]`` names job i in a ``Failed`` (default: ``fn`` and its first argument).
    ``workers``: the local pool's size (0: one per core); under Ray, the runtime's CPUs decide."""
    names = names or [f"{fn.__name__}({job[0] if job else ''})" for job in jobs]
    out: list = [None] * len(jobs)

    def finish(i, call, *args):
        try:
            out[i] = call(*args)
        except Exception as e:  # noqa: BLE001 -- reported with its job; the study exits non-zero after the rest
            out[i] = Failed(names[i], one_line(e))
        if done:
            done(i)

    if _current.name == RAY:
        _ray_map(fn, jobs, gpus or [0.0] * len(jobs), finish)
    elif in_process(workers, len(jobs)):
        for i, job in enumerate(jobs):
            finish(i, fn, *job)
    else:
        from experiments.runs import die_with_parent

        n = min(workers or os.cpu_count() or 1, len(jobs))
        with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            for f in as_completed(futures):
                finish(futures[f], f.result)
    return out


def raise_failures(results: list, what: str) -> list:
    """``results`` unchanged when no job failed; else ``RunsFailed`` naming every failed job."""
    failed = [r for r in results if isinstance(r, Failed)]
    if failed:
        lines = "\n".join(f"  {f.job}: {f.error}" for f in failed)
        raise RunsFailed(f"{len(failed)} of {len(results)} {what} failed (the others finished and are cached; "
                         f"rerunning the same command does only what is missing):\n{lines}")
    return results


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def ray_runtime():
    """The ``ray`` module, its runtime started here (``cpus``) or joined (``address``) on first use."""
    import ray

    if not ray.is_initialized():
        start = {"num_cpus": _current.cpus or None} if _current.address is None else {}
        if _current.address is None:  # Ray starts its workers at nice 15: beside any busy process they starve
            os.environ.setdefault(RAY_NICENESS, "0")  # (importing torch took 42 s instead of 3 s beside a study)
        ray.init(address=_current.address, include_dashboard=False, logging_level="ERROR", **start)
    return ray


def _ray_map(fn, jobs, gpus, finish) -> None:
    from experiments.runs import code_version

    ray = ray_runtime()
    task = ray.remote(_ray_call)
    refs = {task.options(num_cpus=1, num_gpus=g).remote(code_version(), fn, *job): i
            for i, (job, g) in enumerate(zip(jobs, gpus))}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            finish(refs[ref], _ray_get, ray, ref)


def _ray_get(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the job's own error, not Ray's wrapping of it
        cause = getattr(e, "cause", None)
        raise (cause if isinstance(cause, Exception) else RuntimeError(str(e).splitlines()[0])) from None


def _ray_call(version: str, fn, *args):
    """A job on a Ray worker: refuse to run other code than the driver's (its results would be cached
    under the driver's code version), then ``fn(*args)`` with one torch thread."""
    import torch

    from experiments.runs import code_version

    if code_version() != version:
        raise RuntimeError(f"this worker runs hlsm {code_version()}, the study {version}: install the same "
                           "commit on every node")
    torch.set_num_threads(1)
    return fn(*args)
