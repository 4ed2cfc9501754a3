"""Ignite/MONAI handlers that mgrad's bundle uses beside MONAI's own."""

import json
import os
import time
from typing import Any, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver

from mgrad.writers import atomic_path

__all__ = [
    "AtomicDiskSaver",
    "CheckpointSaver",
    "ModelLoader",
    "ResumeCheckpointLoader",
    "TimeBudget",
    "TrainingHistory",
    "ValidateAtEnd",
]


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing to a temporary file and renaming it, optionally under one fixed file name.

    A fixed name is replaced in one step by the next save, so ``remove`` leaves it alone: there is never a moment
    without a complete checkpoint on disk.
    """

    def __init__(self, dirname: str, filename: Optional[str] = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Optional[Mapping] = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class CheckpointSaver(MonaiCheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written atomically (temporary file, then rename).

    ``interval_filename`` gives the interval checkpoint one fixed name (e.g. ``checkpoint.pt``, for resuming)
    instead of one name per epoch; ``engine_key`` adds the engine it is attached to (its epoch and iteration) to
    what is saved, under that key (a config cannot name the trainer inside the trainer's own handlers).
    Every other argument is MONAI's.
    """

    def __init__(
        self, *args: Any, interval_filename: Optional[str] = None, engine_key: Optional[str] = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        fixed_names = (
            (self._final_checkpoint, self._final_filename),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        )
        for checkpoint, filename in fixed_names:
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename)

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
        super().attach(engine)


class ResumeCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` that loads ``load_path`` only where it exists (a run to resume).

    Without the file the run starts fresh; with it, everything in ``load_dict`` (model, optimizer, scheduler) and,
    under ``engine_key``, the state of the engine it is attached to (epoch, iteration) is restored before the first
    epoch.
    """

    def __init__(self, *args: Any, engine_key: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.load_dict[self.engine_key] = engine
        if os.path.isfile(self.load_path):
            super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        # a checkpoint at or past this run's max_epochs belongs to a finished run (e.g. MONAI Label's previous
        # training request): resuming it would train nothing, or fail in CheckpointLoader, so start afresh
        if self.engine_key is not None:
            state = torch.load(self.load_path, map_location="cpu", weights_only=False).get(self.engine_key, {})
            done = state.get("iteration", 0) // max(1, state.get("epoch_length") or 1)
            if engine.state.max_epochs is not None and done >= engine.state.max_epochs:
                self.logger.info(
                    f"Not resuming from {self.load_path}: it holds {done} epochs, this run has "
                    f"max_epochs={engine.state.max_epochs}; starting a new run."
                )
                return
        self.logger.info(f"Resuming from {self.load_path}.")
        super().__call__(engine)


class TimeBudget:
    """Ends training cleanly once ``seconds`` of wall-clock time are spent (``None``: no budget).

    Checked after every iteration, in step across processes under torchrun. Pair it with :class:`ValidateAtEnd`
    so that the best checkpoint also considers the weights the run ended with.
    """

    def __init__(self, seconds: Optional[float]) -> None:
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


class ModelLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` for trained weights, with errors that say what is wrong.

    Loads when the engine starts, before any case is processed. A missing file, or a checkpoint whose tensors do
    not fit the network (e.g. trained for another ``out_channels`` or other widths), fails naming the file and the
    problem (the first mismatching tensors) instead of a bare ``torch.load``/``load_state_dict`` error.
    """

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"checkpoint {self.load_path} not found: train the bundle first (it writes models/model.pt) "
                "or point ckpt_path at a trained model."
            )
        try:
            checkpoint = torch.load(self.load_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint {self.load_path} cannot be read: {e}") from e
        for key, obj in self.load_dict.items():
            if isinstance(obj, torch.nn.Module):
                state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, dict) else checkpoint
                _check_fits(self.load_path, obj, state)
        super().__call__(engine)


def _check_fits(path: str, module: torch.nn.Module, state: Mapping[str, Any]) -> None:
    own = module.state_dict()
    problems = [
        f"{name}: checkpoint {tuple(state[name].shape)}, network {tuple(tensor.shape)}"
        for name, tensor in own.items()
        if name in state and hasattr(state[name], "shape") and tuple(state[name].shape) != tuple(tensor.shape)
    ]
    missing = [name for name in own if name not in state]
    if problems or missing:
        details = "; ".join(problems[:3] + [f"missing {name}" for name in missing[:3]])
        raise ValueError(
            f"checkpoint {path} does not fit the network ({len(problems)} tensors of another shape, "
            f"{len(missing)} missing): {details}. Was it trained with another out_channels, features or preset?"
        )


class TrainingHistory:
    """Records the mean training loss and the validation mean Dice of every epoch; writes ``history.json`` and
    ``curves.png`` (loss and Dice curves) to ``output_dir`` after each epoch, atomically, on rank 0.

    Attach it after the ``ValidationHandler`` so that an epoch's validation has run when it records the epoch, and
    after a resume loader: a resumed run continues the ``history.json`` it finds, up to the epoch it resumes from.
    """

    def __init__(self, output_dir: str, validator: Optional[Engine] = None, metric_name: str = "val_mean_dice") -> None:
        self.output_dir = output_dir
        self.validator = validator
        self.metric_name = metric_name
        self.history: dict = {"epoch": [], "loss": [], metric_name: []}
        self._losses: list = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._continue)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_loss)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._record_epoch)
        engine.add_event_handler(Events.COMPLETED, self._record_final_validation)

    def _continue(self, engine: Engine) -> None:
        path = os.path.join(self.output_dir, "history.json")
        if engine.state.epoch > 0 and os.path.isfile(path):
            saved = json.loads(open(path).read())
            keep = sum(1 for e in saved.get("epoch", []) if e <= engine.state.epoch)
            self.history = {k: list(saved.get(k, []))[:keep] for k in self.history}

    def _record_loss(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        self._losses.append(float(loss))

    def _validated_dice(self, engine: Engine) -> Optional[float]:
        if self.validator is None or self.validator.state.epoch != engine.state.epoch:
            return None
        dice = self.validator.state.metrics.get(self.metric_name)
        return None if dice is None else float(dice)

    def _record_epoch(self, engine: Engine) -> None:
        self.history["epoch"].append(engine.state.epoch)
        self.history["loss"].append(sum(self._losses) / max(len(self._losses), 1))
        self.history[self.metric_name].append(self._validated_dice(engine))
        self._losses = []
        self._write()

    def _record_final_validation(self, engine: Engine) -> None:
        """A validation run after the last epoch (:class:`ValidateAtEnd`) fills that epoch's Dice."""
        dice = self._validated_dice(engine)
        if dice is not None and self.history["epoch"] and self.history[self.metric_name][-1] is None:
            self.history[self.metric_name][-1] = dice
            self._write()

    def _write(self) -> None:
        if idist.get_rank() == 0:
            from mgrad.visualize import training_curves

            with atomic_path(os.path.join(self.output_dir, "history.json")) as tmp:
                tmp.write_text(json.dumps(self.history, indent=1))
            training_curves({**self.history, "val_mean_dice": self.history[self.metric_name]},
                            os.path.join(self.output_dir, "curves.png"))  # fmt: skip
