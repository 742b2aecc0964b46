"""TensorBoard events beside ``metrics.jsonl``: a run's curves in the tool people already open.

``MetricsLog`` hands every record to a ``Mirror``, which writes the record's finite numeric scalars
to event files in ``run/tb/`` (tag: the metric name, step: ``record["step"]``), so
``tensorboard --logdir runs`` shows every run. It needs the ``tensorboard`` package (the extra
``hlsm[tensorboard]``); without it the mirror does nothing, and importing hlsm never needs it.

Resume: a resumed run re-logs the steps after its checkpoint. The writer it opens carries
``purge_step``, the first re-logged step, so TensorBoard discards the earlier files' events from
that step on and no step shows twice. Nothing here draws random numbers or touches a model: the
events cannot change a run's result (``experiments.runs.NOT_RUN_CODE`` leaves this file out).
"""

from __future__ import annotations

import math
import numbers
import shutil
import time
from pathlib import Path

TENSORBOARD = "tb"  # the event files' directory inside a run directory
EVENTS = "events.out.tfevents."  # how every event file's name starts; then its creation second


def scalar(value) -> float | None:
    """``value`` as a float if TensorBoard can plot it: a finite number, not a bool, list or string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


class Mirror:
    """The event files of one run: a writer opened at the first record, closed by ``close``."""

    def __init__(self, run: str | Path):
        self.dir = Path(run) / TENSORBOARD
        self.writer = None
        self.missing = False  # tensorboard is not installed: every call is a no-op
        self.purge_step = None  # set by ``truncate``: the first step the next writer re-logs

    def log(self, record: dict) -> None:
        writer = self._writer()
        if writer is None:
            return
        step = record.get("step", 0)  # what MetricsLog.truncate reads too
        for key, value in record.items():
            if key != "step" and (number := scalar(value)) is not None:
                writer.add_scalar(key, number, step)
        # on disk with the record's metrics.jsonl line: a kill loses no step the resume will not re-log,
        # and a running run's curves show up at once (the writer's own flush waits up to 2 minutes)
        writer.flush()

    def truncate(self, step: int) -> None:
        """Hide the events after ``step`` (the run re-logs them) behind the next writer's purge marker."""
        self.close()  # an open writer's file started before the marker: the next record opens a new one
        self.purge_step = step + 1

    def reset(self) -> None:
        """Delete every event file: the run starts over."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.purge_step = None

    def close(self) -> None:
        """Flush and close the file; stops the writer's thread (studies train many runs in one process)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _writer(self):
        if self.writer is not None or self.missing:
            return self.writer
        try:
            from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard
        except ImportError:
            self.missing = True
            return None
        _after_older_files(self.dir)
        self.writer = SummaryWriter(str(self.dir), purge_step=self.purge_step)
        self.purge_step = None
        return self.writer


def _after_older_files(directory: Path) -> None:
    """Wait until the clock has left the second in which the newest event file was made.

    TensorBoard reads a directory's files in name order, and a name is the creation second, then
    host, process id and a counter compared as text (pid 1000 sorts before pid 999). Two files of
    the same second could thus be read newest first, the purge marker before the events it hides.
    Waits (under a second) only when a resume follows its kill within a second, as in tests.
    """
    seconds = [int(s) for p in directory.glob(EVENTS + "*") if (s := p.name[len(EVENTS):].split(".")[0]).isdigit()]
    wait = max(seconds, default=0) + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
