"""Run directories: provenance, metrics, atomic checkpoints, resume.

A run directory holds

    config.json       the full run config, plus provenance: git hash (and whether the tree was
                      dirty), seed, torch version, host, start time
    metrics.jsonl     one JSON object per logged step or eval ({"step": k, ...})
    tb/               the same records' numeric scalars as TensorBoard events, when tensorboard is
                      installed (``hlsm.tensorboard``)
    checkpoint.pt     the latest full training state: model, optimizer, RNG states, step
    policy.pt         the final model alone (weights + model config), what GRPO / eval load

Checkpoints are written atomically (temp file in the same directory, fsync, rename, fsync the
directory): a kill at any moment leaves either the old or the new checkpoint, never half of one.

Every ``.pt`` file holds tensors and plain Python values only (dicts, lists, tuples, numbers,
strings; RNG states as lists and tensors) and is loaded with ``torch.load(weights_only=True)``:
opening a run directory someone shared never runs code from it. A file that needs more (one
written before this format, or a crafted one) is refused with an ``UnsafeCheckpointError`` naming
it; ``python -m hlsm.checkpoint convert FILE`` rewrites an old checkpoint you trust.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hlsm.tensorboard import Mirror

CONFIG, METRICS, CHECKPOINT, POLICY = "config.json", "metrics.jsonl", "checkpoint.pt", "policy.pt"
SNAPSHOTS = "snapshots"  # policies along training (train(..., snapshot_every=N)), for drift figures


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the run stopped before applying that step."""

    def __init__(self, step: int, value: float, last_good: Path | None):
        self.step, self.value, self.last_good = step, value, last_good
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
        super().__init__(f"loss is {value} at step {step}; run stopped ({where})")


def git_info(path: str | Path | None = None) -> dict:
    """{"git_hash": HEAD or None, "git_dirty": bool or None} of the repository holding ``path``."""
    cwd = Path(path or Path(__file__).parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_hash": None, "git_dirty": None}
    if head.returncode:
        return {"git_hash": None, "git_dirty": None}
    return {"git_hash": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


class UnsafeCheckpointError(ValueError):
    """A .pt file holds pickled objects beyond tensors and plain values; it was not loaded."""


class CorruptCheckpointError(ValueError):
    """A .pt file is truncated or not a torch file."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """torch.save ``state`` (tensors and plain values only) to ``path`` atomically."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint or policy file, loaded weights-only: no code in it can run."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 -- anything else a damaged or hostile file can raise
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in text:
            why = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")[:200]
            raise UnsafeCheckpointError(
                f"{path}: refused to load: it holds pickled objects beyond tensors and plain values ({why}). "
                f"If it is a checkpoint written by an older hlsm and you trust it, convert it with "
                f"`python -m hlsm.checkpoint convert {path}`"
            ) from None
        first = (text.splitlines() or [type(e).__name__])[0][:160]
        raise CorruptCheckpointError(
            f"{path} is corrupt (truncated, damaged or not a torch file: {type(e).__name__}: {first}); "
            f"delete it to start over, or restore it from a copy"
        ) from None


def convert_legacy(path: str | Path) -> Path:
    """Rewrite a checkpoint of an older hlsm (numpy RNG state as a pickled array) in the safe format.

    Loads it with ``weights_only=False``: only for files you trust. Returns the path.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state.get("rng"), dict) and not isinstance(state["rng"].get("numpy"), list):
        state["rng"] = _plain_rng(state["rng"])
    save_checkpoint(path, state)
    load_checkpoint(path)  # proves the result loads weights-only
    return Path(path)


# --- RNG state ------------------------------------------------------------------------------


def _plain_rng(state: dict) -> dict:
    """RNG states as plain values: numpy's (name, uint32 keys, pos, has_gauss, gauss) as a list."""
    name, keys, pos, has_gauss, gauss = state["numpy"]
    version, internal, gauss_next = state["python"]
    return {**state, "python": [int(version), [int(v) for v in internal], gauss_next],
            "numpy": [str(name), [int(v) for v in keys], int(pos), int(has_gauss), float(gauss)]}


def rng_state() -> dict:
    """Every global RNG a training step may draw from (Python, numpy, torch CPU and CUDA), as
    plain lists and tensors so that checkpoints load weights-only."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return _plain_rng(state)


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()`` (its tensors may have been loaded onto a GPU: moved back to CPU)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- run directory --------------------------------------------------------------------------


def init_run(out: str | Path, config: dict, resume: bool = False, ignore: tuple[str, ...] = ()) -> Path:
    """Create (or, with ``resume``, reopen) a run directory and write config.json with provenance.

    A fresh run refuses a directory that already holds a run. A resumed run checks that its
    config equals the stored one, except for the keys in ``ignore`` (e.g. device, eval cadence).
    """
    out = Path(out)
    path = out / CONFIG
    if path.exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run; pass resume=True or choose another --out")
        stored = json.loads(path.read_text())["config"]
        new = json.loads(json.dumps(config))
        diff = sorted(k for k in set(stored) | set(new) if k not in ignore and stored.get(k) != new.get(k))
        if diff:
            raise ValueError(
                f"cannot resume {out}: config differs in {diff} "
                f"(stored {[stored.get(k) for k in diff]}, given {[new.get(k) for k in diff]})"
            )
        return out
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config,
        "seed": config.get("seed"),
        **git_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=1, default=str) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return out


def read_config(run: str | Path) -> dict:
    """The config a run was started with (config.json's "config")."""
    return json.loads((Path(run) / CONFIG).read_text())["config"]


def run_formats(run: str | Path) -> dict:
    """{"fmt", "granularity", "formats"} a run renders its items in: an SFT run's own, a GRPO run's init's
    (``hlsm.evaluate.evaluate`` takes them as keywords)."""
    cfg = read_config(run)
    if "fmt" not in cfg and cfg.get("init"):  # a GRPO run: the SFT run it started from
        cfg = read_config(cfg["init"])
    return {"fmt": cfg.get("fmt", "values"), "granularity": cfg.get("granularity", 1),
            "formats": cfg.get("formats", {})}


class MetricsLog:
    """Appends one JSON line per record to ``metrics.jsonl``, and mirrors it to TensorBoard events.

    ``truncate(step)`` drops records after ``step`` (a resumed run re-logs them), so the log of a
    resumed run equals that of an uninterrupted one; ``close()`` completes the event files.
    """

    def __init__(self, run: str | Path, enabled: bool = True):
        self.path = Path(run) / METRICS
        self.enabled = enabled
        self.tensorboard = Mirror(run)  # opens nothing until the first record

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        self.tensorboard.log(record)

    def reset(self) -> None:
        """Drop every record: a run starting over (no checkpoint to resume) logs from scratch."""
        if not self.enabled:
            return
        self.tensorboard.reset()
        if self.path.exists():
            self.path.unlink()

    def truncate(self, step: int) -> None:
        if not self.enabled:
            return
        self.tensorboard.truncate(step)
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
        text = "".join(line + "\n" for line in keep)
        atomic_write_bytes(self.path, lambda f: f.write(text.encode()))

    def close(self) -> None:
        """Flush and close the event files (a later record opens new ones)."""
        self.tensorboard.close()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


def read_metrics(run: str | Path) -> list[dict]:
    return MetricsLog(run).read()


def latest_checkpoint(run: str | Path) -> Path | None:
    path = Path(run) / CHECKPOINT
    return path if path.exists() else None


def save_policy(run: str | Path, model, extra: dict | None = None, name: str = POLICY) -> Path:
    """Write the model alone (weights + model config) to ``run/name`` (policy.pt) atomically."""
    from hlsm.policy import unwrap

    base = unwrap(model)
    path = Path(run) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": base.state_dict(), "model_config": base.config.to_dict(), **(extra or {})}
    save_checkpoint(path, payload)
    return path


def snapshot_name(step: int) -> str:
    """Where ``train(..., snapshot_every=N)`` keeps the policy after ``step`` updates (0: the start)."""
    return f"{SNAPSHOTS}/step-{step:06d}.pt"


def snapshots(run: str | Path) -> dict[int, Path]:
    """step -> snapshot file of a run trained with ``snapshot_every`` (empty when it kept none)."""
    d = Path(run) / SNAPSHOTS
    return {int(p.stem.split("-")[1]): p for p in sorted(d.glob("step-*.pt"))} if d.exists() else {}


def load_policy(source: str | Path, device="cpu"):
    """A Policy from a run directory (policy.pt, else checkpoint.pt) or a .pt file; eval mode.

    Returns (model, payload): payload is the loaded dict without the weights (step, config, ...).
    """
    from hlsm.policy import Policy, PolicyConfig

    source = Path(source)
    if source.is_dir():
        for name in (POLICY, CHECKPOINT):
            if (source / name).exists():
                source = source / name
                break
        else:
            raise FileNotFoundError(f"{source} holds neither {POLICY} nor {CHECKPOINT}")
    payload = load_checkpoint(source, map_location="cpu")
    model = Policy(PolicyConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    model.to(device).eval()
    return model, {k: v for k, v in payload.items() if k not in ("model", "optimizer", "rng")}


EVAL_FIELDS = ("eval_n", "eval_supports")  # what a run's final eval.csv depends on beyond the weights


def same_eval(out: Path, config: dict) -> bool:
    """Whether the finished run in ``out`` has an eval.csv made with ``config``'s evaluation settings."""
    if not (Path(out) / "eval.csv").exists():
        return False
    stored = read_config(out)
    new = json.loads(json.dumps(config))
    return all(stored.get(k) == new.get(k) for k in EVAL_FIELDS)


def start_step(out: Path, resume: bool, log: MetricsLog, enabled: bool = True):
    """The checkpoint to resume from (or None) and the log made consistent with it.

    With ``resume`` and a checkpoint, records after its step are dropped (they are re-logged);
    with ``resume`` but no checkpoint the run starts over, says so, and its log is emptied, so the
    log of a resumed run always equals an uninterrupted one's.
    """
    ckpt = latest_checkpoint(out) if resume else None
    if resume and ckpt is None:
        if enabled:
            print(f"{out}: no checkpoint, starting over", file=sys.stderr)
        log.reset()
    return ckpt


def main(argv=None) -> int:
    from hlsm.cli import Parser

    p = Parser(prog="python -m hlsm.checkpoint", description="checkpoint tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="rewrite trusted checkpoints of an older hlsm in the safe format")
    c.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    for f in args.files:
        if not Path(f).is_file():
            p.error(f"{f}: no such checkpoint file")
        convert_legacy(f)
        print(f"converted {f}: loads weights-only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
