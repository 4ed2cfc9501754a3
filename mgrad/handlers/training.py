"""Training-run handlers: a wall-clock budget, a last validation, and the loss and Dice history with its curves."""

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from mgrad.writers import read_json, write_json

__all__ = ["TimeBudget", "TrainingHistory", "ValidateAtEnd", "completed_epochs"]


class TimeBudget:
    """Ends training cleanly once ``seconds`` of wall-clock time are spent (``None``: no budget).

    Checked after every iteration, in step across processes under torchrun. Pair it with :class:`ValidateAtEnd`
    so that the best checkpoint also considers the weights the run ended with.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = 0.0
        self.spent = False

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, engine: Engine) -> None:
        self.start = time.monotonic()

    def _check(self, engine: Engine) -> None:
        spent = time.monotonic() - self.start >= self.seconds
        if idist.get_world_size() > 1:  # every process must stop at the same iteration
            spent = bool(idist.all_reduce(int(spent), op="MAX"))
        if not self.spent and spent:
            self.spent = True
            engine.logger.info(f"Time budget of {self.seconds:.0f} s spent at epoch {engine.state.epoch}; stopping.")
            engine.terminate()


class ValidateAtEnd:
    """Runs ``validator`` once more when training ends, unless the last epoch was validated already.

    A run stopped by a time budget, or shorter than the validation interval (such as a MONAI Label training
    request), then still has its final weights considered for the best checkpoint (``models/model.pt``).
    """

    def __init__(self, validator: Engine) -> None:
        self.validator = validator

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _finish(self, engine: Engine) -> None:
        if self.validator.state.epoch != engine.state.epoch:
            self.validator.run(engine.state.epoch)


class TrainingHistory:
    """Records the mean training loss and the validation mean Dice of every epoch; writes ``history.json`` and
    ``curves.png`` (loss and Dice curves) to ``output_dir`` after each epoch, atomically, on rank 0.

    ``history.json`` holds equal-length lists ``epoch``, ``iteration`` (the trainer's iteration count when the entry
    was recorded), ``epoch_length`` (the iterations of a whole epoch), ``loss`` and the validation metric (``None``
    where an epoch was not validated). A run that ends inside an epoch (a time budget) gets one more entry for that
    partial epoch, with the loss of the iterations it ran and the final validation (:class:`ValidateAtEnd`), under
    the epoch and iteration it ran at: :func:`completed_epochs` tells how much of it was trained.

    Attach it after the ``ValidationHandler`` so that an epoch's validation has run when it records the epoch, and
    after a resume loader: a resumed run continues the ``history.json`` it finds, up to the epoch it resumes from.

    Args:
        output_dir: folder of ``history.json`` and ``curves.png``.
        validator: the validation engine whose ``metric_name`` is recorded (``None``: loss only).
        metric_name: the validation metric to record.
    """

    def __init__(self, output_dir: str, validator: Engine | None = None, metric_name: str = "val_mean_dice") -> None:
        self.output_dir = output_dir
        self.validator = validator
        self.metric_name = metric_name
        self.history: dict = {"epoch": [], "iteration": [], "epoch_length": [], "loss": [], metric_name: []}
        self._losses: list = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._continue)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._append)
        engine.add_event_handler(Events.COMPLETED, self._record_final_validation)

    def _continue(self, engine: Engine) -> None:
        path = os.path.join(self.output_dir, "history.json")
        if engine.state.epoch > 0 and os.path.isfile(path):
            saved = read_json(path)
            epochs = saved.get("epoch", [])
            keep = sum(1 for e in epochs if e <= engine.state.epoch)
            # a list written before it was recorded (iteration, epoch_length) is None for the entries it lacks
            self.history = {k: list(saved.get(k, [None] * len(epochs)))[:keep] for k in self.history}

    def _record_loss(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        # kept where it was computed until the epoch's mean is taken: reading it now would make the host wait for
        # the device at the end of every iteration, instead of queueing the next one
        self._losses.append(loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss)))

    def _validated_metric(self, engine: Engine) -> float | None:
        if self.validator is None or self.validator.state.epoch != engine.state.epoch:
            return None
        value = self.validator.state.metrics.get(self.metric_name)
        return None if value is None else float(value)

    def _append(self, engine: Engine) -> None:
        self.history["epoch"].append(engine.state.epoch)
        self.history["iteration"].append(engine.state.iteration)
        self.history["epoch_length"].append(engine.state.epoch_length)
        mean = torch.stack(self._losses).double().mean().item() if self._losses else None
        self.history["loss"].append(mean)
        self.history[self.metric_name].append(self._validated_metric(engine))
        self._losses = []
        self._write()

    def _record_final_validation(self, engine: Engine) -> None:
        """After the last epoch: a validation run by :class:`ValidateAtEnd` fills that epoch's entry, or, where the
        run ended inside an epoch, is recorded in a new entry for that partial epoch."""
        if self.history["epoch"] and self.history["epoch"][-1] == engine.state.epoch:
            value = self._validated_metric(engine)
            if value is not None and self.history[self.metric_name][-1] is None:
                self.history[self.metric_name][-1] = value
                self._write()
        elif self._losses or self._validated_metric(engine) is not None:
            self._append(engine)

    def _write(self) -> None:
        if idist.get_rank() == 0:
            from mgrad.visualize import training_curves

            write_json(os.path.join(self.output_dir, "history.json"), self.history, indent=1)
            training_curves({**self.history, "val_mean_dice": self.history[self.metric_name]},
                            os.path.join(self.output_dir, "curves.png"))  # fmt: skip


def completed_epochs(history: Mapping[str, Sequence[Any]]) -> int | float | None:
    """The epochs a run recorded by :class:`TrainingHistory` trained: whole, or with the fraction of the epoch it
    stopped in (a time budget), to two decimals.

    Args:
        history: the contents of its ``history.json``.

    Returns:
        the last entry's iterations over the epoch length (``1.15`` for 188 iterations of 164-iteration epochs; an
        ``int`` where the run ended on an epoch's end); the last entry's epoch for a history written before the epoch
        length was recorded; ``None`` for an empty one.

    Example:
        >>> completed_epochs({"epoch": [1, 2], "iteration": [164, 188], "epoch_length": [164, 164]})
        1.15
        >>> completed_epochs({"epoch": [1, 2], "iteration": [164, 188]})
        2
    """
    epochs = history.get("epoch") or []
    if not epochs:
        return None
    iteration, epoch_length = (list(history.get(key) or [None])[-1] for key in ("iteration", "epoch_length"))
    if not iteration or not epoch_length:
        return epochs[-1]
    completed = iteration / epoch_length
    return int(completed) if completed.is_integer() else round(completed, 2)
