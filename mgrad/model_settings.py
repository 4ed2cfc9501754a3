"""What inference needs to know of a trained model, kept beside its weights: ``model.json`` beside ``model.pt``.

``models/model.pt`` is a bare state dict (as MONAI bundles keep it), which says nothing of the data it was trained on.
A model trained with ``--dataset decathlon`` on MRI with four classes, then run on a folder of new volumes, would
otherwise be set up from the bundle's defaults (the synthetic CT's eight classes and its CT window): its checkpoint
does not fit, and with ``--num_classes`` alone the MRI is windowed as CT, silently. The training therefore writes
the settings that define the model's input and output (:data:`MODEL_SETTINGS`) beside each best model it saves
(``AtomicCheckpointSaver(key_metric_settings=...)``), and the inference and evaluation configs take them from there
unless the command line sets them.
"""

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrad.writers import write_json

__all__ = ["MODEL_SETTINGS", "model_settings", "settings_path", "write_model_settings"]

MODEL_SETTINGS = ("preset", "in_channels", "num_classes", "class_names", "intensity")
"""The bundle ids a trained model fixes: its size (``preset``), its input channels and their intensity scaling, and its
classes. The training's ``dataset`` is written too, for the reader's information; nothing reads it back."""


def settings_path(ckpt_path: str | os.PathLike) -> Path:
    """The settings file of the weights ``ckpt_path``: the same name with ``.json`` (``model.pt`` -> ``model.json``)."""
    return Path(ckpt_path).with_suffix(".json")


def write_model_settings(ckpt_path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    """Write ``settings`` as the settings file of ``ckpt_path`` (:func:`settings_path`), atomically."""
    write_json(settings_path(ckpt_path), dict(settings))


def _read(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read: {type(error).__name__}: {error}") from error
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object of model settings, got {type(settings).__name__}")
    return {key: settings[key] for key in MODEL_SETTINGS if key in settings}


def model_settings(ckpt_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The settings (:data:`MODEL_SETTINGS`) written beside the weights ``ckpt_paths``: one checkpoint, or several
    (an ensemble), which must agree; ``{}`` where none has a settings file (weights from elsewhere, or from before
    the training wrote them).

    Args:
        ckpt_paths: a checkpoint path, or a sequence of them.

    Returns:
        ``{id: value}`` for the ids of :data:`MODEL_SETTINGS` the file holds.

    Raises:
        ValueError: a settings file that cannot be read, or ensemble members whose settings differ (naming both).

    Example:
        >>> model_settings("models/model.pt")  # doctest: +SKIP
        {'preset': 'small', 'in_channels': 1, 'num_classes': 4, 'class_names': ['RV', 'Myo', 'LV'], 'intensity': 'mri'}
    """
    paths = [ckpt_paths] if isinstance(ckpt_paths, (str, os.PathLike)) else list(ckpt_paths)
    found = [(path, _read(path)) for path in map(settings_path, paths) if path.is_file()]
    if not found:
        return {}
    first_path, first = found[0]
    for path, settings in found[1:]:
        if settings != first:
            raise ValueError(f"{path}: the model settings {settings} differ from those of {first_path}, {first}")
    return first
