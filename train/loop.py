"""The step loop the three training phases share.

Each phase (pretrain, score_predictor, perceptual) describes one step, its log record, its
validation and its checkpoint as a :class:`TrainingPhase`; :func:`run_phase` runs them in
the one order every phase's bit-exact resume rests on: step, log, validate, save. It also
owns the progress bar, the averaging window of the logged values, the JSON-lines logs
(``{"step": …, <phase fields>, "elapsed_s": …}``) and their closing, whatever happens.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
import torch

__all__ = ["TrainingPhase", "run_phase", "halving_factor", "set_lr", "every"]


def halving_factor(step: int, every: int) -> float:
    """The step-decay schedule of phases 1 and 3: 1 for steps 1..every, then halved every ``every`` steps."""
    return 0.5 ** ((step - 1) // every)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` the learning rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def every(step: int, interval: int, stop: int) -> bool:
    """Whether an interval falls on ``step``: each ``interval`` steps, and at the last step."""
    return step % interval == 0 or step == stop


class TrainingPhase(abc.ABC):
    """One phase's part of the loop. ``run_phase`` calls, for each step:
    ``train_step``; if ``log_due``, ``log_fields`` (and ``postfix``); if ``val_due``,
    ``validate`` then, after the record is written, ``report_validation``; if ``save_due``,
    ``save``. The defaults are phases 1 and 3's intervals (``--log-every``, ``--val-every``
    with a validator, ``--save-every``, each also at the last step)."""

    desc = "train"
    """Progress-bar label."""

    def __init__(self, *, stop: int, log_every: int, val_every: int, save_every: int, validates: bool) -> None:
        self.stop = stop
        self.log_every = log_every
        self.val_every = val_every
        self.save_every = save_every
        self.validates = validates

    @abc.abstractmethod
    def train_step(self, step: int) -> Mapping[str, float]:
        """One optimisation step; returns the values averaged into the next log record."""

    @abc.abstractmethod
    def log_fields(self, means: dict[str, float]) -> dict[str, Any]:
        """The train-log record's fields between ``step`` and ``elapsed_s``, from the means
        of the values since the last record."""

    def postfix(self, record: Mapping[str, Any]) -> dict[str, str]:
        """What the progress bar shows of a train-log record."""
        return {}

    @abc.abstractmethod
    def validate(self, step: int) -> dict[str, Any]:
        """The validation record's fields after ``step``."""

    def report_validation(self, step: int, record: Mapping[str, Any]) -> None:  # noqa: B027 - an optional hook
        """After the validation record is written: log it, keep a best checkpoint, ..."""

    @abc.abstractmethod
    def save(self, step: int) -> None:
        """Write the checkpoint(s) of ``step``."""

    def log_due(self, step: int) -> bool:
        return every(step, self.log_every, self.stop)

    def val_due(self, step: int) -> bool:
        return self.validates and every(step, self.val_every, self.stop)

    def save_due(self, step: int, validated: bool) -> bool:
        return every(step, self.save_every, self.stop)


class _Window:
    """Logged values since the last train-log record, per key, in first-logged order."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.values.setdefault(key, []).append(value)

    def means(self) -> dict[str, float]:
        return {key: float(np.mean(v)) for key, v in self.values.items()}


def _write(log: TextIO, record: Mapping[str, Any]) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()


def run_phase(phase: TrainingPhase, *, start: int, train_log: TextIO, val_log: TextIO, quiet: bool) -> int:
    """Run steps ``start + 1 .. phase.stop``; return the last step run (``start`` if none).
    Both logs are closed on return, error or interrupt."""
    from tqdm import tqdm

    bar = tqdm(total=phase.stop, initial=min(start, phase.stop), disable=quiet, dynamic_ncols=True, desc=phase.desc)
    window = _Window()
    t0 = time.time()
    step = start
    try:
        for step in range(start + 1, phase.stop + 1):
            window.add(phase.train_step(step))
            bar.update(1)
            if phase.log_due(step):
                record = {"step": step, **phase.log_fields(window.means()), "elapsed_s": round(time.time() - t0, 1)}
                _write(train_log, record)
                bar.set_postfix(phase.postfix(record))
                window = _Window()
            validated = phase.val_due(step)
            if validated:
                record = {"step": step, **phase.validate(step)}
                _write(val_log, record)
                phase.report_validation(step, record)
            if phase.save_due(step, validated):
                phase.save(step)
    finally:
        bar.close()
        train_log.close()
        val_log.close()
    return step
