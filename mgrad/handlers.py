"""Ignite/MONAI handlers that mgrad's bundle uses beside MONAI's own."""

import os
import time
from typing import Any, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver

__all__ = ["AtomicDiskSaver", "CheckpointSaver", "ModelLoader", "ResumeCheckpointLoader", "TimeBudget"]


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
            self.logger.info(f"Resuming from {self.load_path}.")
            super().attach(engine)


class TimeBudget:
    """Ends training cleanly once ``seconds`` of wall-clock time are spent (``None``: no budget).

    Checked after every iteration (in step across processes under torchrun); when the budget is spent the trainer
    terminates and, if a ``validator`` is given, runs it once more so that the best checkpoint also considers the
    final weights.
    """

    def __init__(self, seconds: Optional[float], validator: Optional[Engine] = None) -> None:
        self.seconds = seconds
        self.validator = validator
        self.start = 0.0
        self.spent = False

    def attach(self, engine: Engine) -> None:
        if self.seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        engine.add_event_handler(Events.COMPLETED, self._finish)

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

    def _finish(self, engine: Engine) -> None:
        if self.spent and self.validator is not None:
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
