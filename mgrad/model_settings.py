"""What inference needs to know of a trained model, kept beside its weights: ``model.json`` beside ``model.pt``.

``models/model.pt`` is a bare state dict (as MONAI bundles keep it), which says nothing of the data it was trained on.
A model trained with ``--dataset decathlon`` on MRI with four classes, then run on a folder of new volumes, would
otherwise be set up from the bundle's defaults (the synthetic CT's eight classes and its CT window): its checkpoint
does not fit, and with ``--num_classes`` alone the MRI is windowed as CT, silently. The training therefore writes
the settings that define the model's input and output (:data:`MODEL_SETTINGS`) beside each best model it saves
(``AtomicCheckpointSaver(key_metric_settings=...)``), and the inference and evaluation configs take them from there
unless the command line sets them.

The network's size travels as well: the ``preset`` it was trained under, and under ``size`` the part of the size
that the weights and their input resolution fix (:data:`NETWORK_SIZE`), which differs from the preset's where the
training was given ``--size``. Inference and evaluation build that network (:func:`model_size`) with the inference
settings of the preset in force (its ``batch_size``: the slices per forward pass, not the training's batch). The
command line decides as for the other ids: ``--size`` builds the size it gives, and a ``--preset`` other than the
model's builds that preset's network (whose shapes the weights must then fit), while repeating the model's own preset
changes nothing.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrad.writers import read_json, write_json

__all__ = [
    "MODEL_SETTINGS",
    "NETWORK_SIZE",
    "model_settings",
    "model_size",
    "network_size",
    "settings_path",
    "write_model_settings",
]

MODEL_SETTINGS = ("preset", "size", "in_channels", "num_classes", "class_names", "intensity")
"""The bundle ids a trained model fixes: its size (``preset``, and the network's part of ``size``), its input channels
and their intensity scaling, and its classes. The training's ``dataset`` is written too, for the reader's information;
nothing reads it back."""

NETWORK_SIZE = ("features", "rfb_channels", "spatial_size")
"""The keys of a size (a preset of the bundle's ``size_presets``, or ``--size``) that the trained network fixes: its
widths and the slice size it was trained at. The others (``batch_size``, ``learning_rate``) are training choices."""


def network_size(size: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``size`` (a size preset, or a ``--size`` given instead) that the trained network fixes
    (:data:`NETWORK_SIZE`), as the training writes it to ``model.json``.

    Example:
        >>> network_size({"features": [8, 16, 32, 64, 128], "rfb_channels": 8, "spatial_size": 48, "batch_size": 8})
        {'features': [8, 16, 32, 64, 128], 'rfb_channels': 8, 'spatial_size': 48}
    """
    return {key: size[key] for key in NETWORK_SIZE}


def model_size(
    size_presets: Mapping[str, Mapping[str, Any]], preset: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The size the configs build: preset ``preset``, with the network's part (:data:`NETWORK_SIZE`) that a model's
    ``settings`` (:func:`model_settings`) record in place of the preset's where the model was trained under ``preset``.
    A model trained with ``--size`` is thus built as trained, with the preset's ``batch_size`` for inference; another
    ``preset`` (given on the command line) builds that preset's network.

    Args:
        size_presets: the bundle's ``size_presets``: ``{name: size}``.
        preset: the preset in force.
        settings: the model's settings; ``{}`` for none (a training, or weights without ``model.json``).

    Returns:
        ``{"features", "rfb_channels", "spatial_size", "batch_size", "learning_rate"}`` as the preset's size holds.

    Raises:
        ValueError: ``preset`` is none of ``size_presets``.

    Example:
        >>> presets = {"small": {"features": [16, 32, 64, 128, 256], "rfb_channels": 16, "spatial_size": 96,
        ...                      "batch_size": 8, "learning_rate": 0.001}}
        >>> trained = {"preset": "small", "size": {"features": [8, 16, 32, 64, 128], "rfb_channels": 8,
        ...                                        "spatial_size": 48}}
        >>> model_size(presets, "small", trained)["rfb_channels"], model_size(presets, "small", {})["rfb_channels"]
        (8, 16)
    """
    if preset not in size_presets:
        raise ValueError(f"unknown preset {preset!r}: the bundle's presets are {', '.join(size_presets)}")
    size = dict(size_presets[preset])
    if settings.get("preset", preset) == preset:
        size.update(settings.get("size", {}))
    return size


def settings_path(ckpt_path: str | os.PathLike) -> Path:
    """The settings file of the weights ``ckpt_path``: the same name with ``.json`` (``model.pt`` -> ``model.json``)."""
    return Path(ckpt_path).with_suffix(".json")


def write_model_settings(ckpt_path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    """Write ``settings`` as the settings file of ``ckpt_path`` (:func:`settings_path`), atomically."""
    write_json(settings_path(ckpt_path), dict(settings))


def _read(path: Path) -> dict[str, Any]:
    settings = read_json(path)
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
        {'preset': 'small', 'size': {'features': [16, 32, 64, 128, 256], 'rfb_channels': 16, 'spatial_size': 96},
         'in_channels': 1, 'num_classes': 4, 'class_names': ['RV', 'Myo', 'LV'], 'intensity': 'mri'}
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
