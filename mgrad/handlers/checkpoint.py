"""Checkpoint handlers: atomic saving, resuming an interrupted run, loading trained weights with clear errors."""

import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver

from mgrad.model_settings import write_model_settings

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "KeyMetricState", "ModelLoader", "ResumeCheckpointLoader"]


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing to a temporary file and renaming it, optionally under one fixed file name.

    A fixed name is replaced in one step by the next save, so ``remove`` leaves it alone: there is never a moment
    without a complete checkpoint on disk. With ``settings``, each save first writes them (atomically too) as the
    checkpoint's settings file (:func:`mgrad.model_settings.write_model_settings`: ``model.json`` beside
    ``model.pt``).
    """

    def __init__(self, dirname: str, filename: str | None = None, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False, create_dir=True)
        self.filename = filename
        self.settings = settings

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        name = self.filename or filename
        if self.settings is not None:
            write_model_settings(os.path.join(self.dirname, name), self.settings)
        super().__call__(checkpoint, name, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(MonaiCheckpointSaver):
    """``monai.handlers.CheckpointSaver`` whose files are written atomically (temporary file, then rename).

    ``interval_filename`` gives the interval checkpoint one fixed name (e.g. ``checkpoint.pt``, for resuming)
    instead of one name per epoch; ``engine_key`` adds the engine it is attached to (its epoch and iteration) to
    what is saved, under that key (a config cannot name the trainer inside the trainer's own handlers);
    ``key_metric_settings`` (e.g. the classes and intensity scaling the model was trained with, see
    :mod:`mgrad.model_settings`) are written as JSON beside the key-metric file each time it is saved, just before
    it (``model.json`` beside ``model.pt``). Every other argument is MONAI's.
    """

    def __init__(
        self,
        *args: Any,
        interval_filename: str | None = None,
        engine_key: str | None = None,
        key_metric_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        self._key_metric_filename = kwargs.get("key_metric_filename")
        self._key_metric_negative_sign = bool(kwargs.get("key_metric_negative_sign", False))
        fixed_names = (
            (self._final_checkpoint, self._final_filename, None),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename"), key_metric_settings),
            (self._interval_checkpoint, interval_filename, None),
        )
        for checkpoint, filename, settings in fixed_names:
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename, settings)

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
        if self._key_metric_checkpoint is not None:
            engine.add_event_handler(Events.STARTED, self._continue_key_metric)
        super().attach(engine)

    def _continue_key_metric(self, engine: Engine) -> None:
        """Before a validation run: where the engine carries a best metric restored from a resumed run
        (:class:`KeyMetricState`) and this saver has not saved yet, start its tracking from that best, so that the
        key-metric file (``models/model.pt``) is replaced only by a strictly better model."""
        checkpoint = self._key_metric_checkpoint
        filename = self._key_metric_filename
        if checkpoint._saved or getattr(engine.state, "best_metric_epoch", -1) == -1 or filename is None:
            return
        if os.path.isfile(os.path.join(self.save_dir, filename)):
            priority = -engine.state.best_metric if self._key_metric_negative_sign else engine.state.best_metric
            checkpoint.load_state_dict({"_saved": [(priority, filename)]})


class KeyMetricState:
    """The best key metric of a validation engine and the epoch it was reached at, as a checkpointable object.

    Saved beside the model in the trainer's interval checkpoint and restored by :class:`ResumeCheckpointLoader`, it
    lets a resumed run remember the best validation before the interruption: :class:`AtomicCheckpointSaver` then
    replaces the best model only with a strictly better one.

    Args:
        validator: the validation engine (a MONAI evaluator, whose state has ``best_metric`` and
            ``best_metric_epoch``).
    """

    def __init__(self, validator: Engine) -> None:
        self.validator = validator

    def state_dict(self) -> dict[str, float | int]:
        state = self.validator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, float | int]) -> None:
        self.validator.state.best_metric = float(state_dict["best_metric"])
        self.validator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


class ResumeCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` that loads ``load_path`` only where it exists (a run to resume).

    Without the file the run starts fresh; with it, everything in ``load_dict`` (model, optimizer, scheduler) and,
    under ``engine_key``, the state of the engine it is attached to (epoch, iteration) is restored before the first
    epoch.
    """

    def __init__(self, *args: Any, engine_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        self._key_metric_filename = kwargs.get("key_metric_filename")
        self._key_metric_negative_sign = bool(kwargs.get("key_metric_negative_sign", False))

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.load_dict[self.engine_key] = engine
        if os.path.isfile(self.load_path):
            super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        saved = torch.load(self.load_path, map_location="cpu", weights_only=False)
        try:  # another network's run: neither resumed nor overwritten
            _check_networks_fit(self.load_path, self.load_dict, saved, bare=False)
        except ValueError as e:
            raise ValueError(
                f"{e} It belongs to another run, which this one would overwrite: train into another "
                "bundle_root or ckpt_dir, or move its folder away."
            ) from None
        # a checkpoint at or past this run's max_epochs belongs to a finished run (e.g. MONAI Label's previous
        # training request): resuming it would train nothing, or fail in CheckpointLoader, so start afresh
        if self.engine_key is not None:
            state = saved.get(self.engine_key, {})
            done = state.get("iteration", 0) // max(1, state.get("epoch_length") or 1)
            if engine.state.max_epochs is not None and done >= engine.state.max_epochs:
                self.logger.info(
                    f"Not resuming from {self.load_path}: it holds {done} epochs, this run has "
                    f"max_epochs={engine.state.max_epochs}; starting a new run."
                )
                return
        self.logger.info(f"Resuming from {self.load_path}.")
        for key in [k for k, obj in self.load_dict.items() if k not in saved and not isinstance(obj, torch.nn.Module)]:
            # e.g. the best-metric state, which checkpoints written by earlier versions do not hold
            self.logger.info(f"{self.load_path} holds no '{key}'; it starts afresh.")
            self.load_dict.pop(key)
        super().__call__(engine)


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
        _check_networks_fit(self.load_path, self.load_dict, checkpoint, bare=True)
        super().__call__(engine)


def _check_networks_fit(path: str, load_dict: Mapping[str, Any], checkpoint: Any, bare: bool) -> None:
    """:func:`_check_fits` for every network of ``load_dict``, each against its entry of ``checkpoint``; with
    ``bare``, a checkpoint without that entry is taken as the network's own state dict."""
    for key, obj in load_dict.items():
        if isinstance(obj, torch.nn.Module):
            own = checkpoint if bare else {}
            state = checkpoint.get(key, own) if isinstance(checkpoint, Mapping) else checkpoint
            _check_fits(path, obj, state)


def _check_fits(path: str, module: torch.nn.Module, state: Mapping[str, Any]) -> None:
    if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        module = module.module  # saved and loaded as the module it wraps, as ignite's Checkpoint does
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
