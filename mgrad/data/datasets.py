"""The dataset registry: one typed entry per supported dataset, read by the bundle configs, the CLI and the checks.

Each :class:`DatasetSpec` says how the dataset's files are listed (its datalist builder), how its intensities are
scaled, how its raw labels map to class indices and which classes it has. ``get_datalist`` and ``dataset_info`` are
the two ways in.
"""

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mgrad.data.acdc import acdc_datalist, acdc_h5_datalist
from mgrad.data.classes import ACDC_CLASSES, BTCV_TO_SYNAPSE, SYNAPSE_CLASSES
from mgrad.data.datalist import SPLITS, decathlon_datalist, decathlon_json, synthetic_datalist
from mgrad.data.errors import DataError
from mgrad.data.synapse import synapse_datalist, synapse_transunet_datalist
from mgrad.writers import read_json

__all__ = ["DATASETS", "DatasetSpec", "dataset_info", "get_datalist"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipelines need to know about one dataset.

    Args:
        name: the dataset id (``--dataset NAME``).
        datalist: ``(dataset_dir, split) -> [{"image", "label", ...}]`` (``(dataset_dir, split, seed)`` where
            ``seeded_split``).
        intensity: intensity preset: ``"ct"`` (window [-125, 275] HU to [0, 1]), ``"mri"`` (per-volume min-max to
            [0, 1]) or ``"none"`` (files already in [0, 1]).
        num_classes: number of classes, background included (``None``: read from the data, see ``decathlon``).
        class_names: names of classes ``1 .. num_classes - 1``.
        label_map: raw label value -> class index, or ``None`` where the labels are class indices already.
        training_slices: the training items are 2D slice files (sampled with ``num_samples=1``).
        seeded_split: the datalist builder splits the cases itself and takes a seed.

    Example:
        >>> DATASETS["synapse"].num_classes, DATASETS["synapse"].intensity
        (9, 'ct')
    """

    name: str
    datalist: Callable[..., list[dict[str, str]]]
    intensity: str = "ct"
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    label_map: Mapping[int, int] | None = None
    training_slices: bool = False
    seeded_split: bool = False

    @property
    def orig_labels(self) -> list[int]:
        """The raw label values of ``label_map`` in ascending order (empty without a map)."""
        return sorted(self.label_map or {})

    @property
    def target_labels(self) -> list[int]:
        """The class index of each of :attr:`orig_labels`."""
        return [self.label_map[k] for k in self.orig_labels] if self.label_map else []

    def __getitem__(self, key: str) -> Any:
        """``spec["num_classes"]``: the attribute access of configs written for the earlier dict registry (where the
        intensity preset was called ``"preset"``)."""
        return getattr(self, "intensity" if key == "preset" else key)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", synthetic_datalist, "ct", 9, SYNAPSE_CLASSES),
        DatasetSpec("synapse", synapse_datalist, "ct", 9, SYNAPSE_CLASSES, BTCV_TO_SYNAPSE),
        DatasetSpec("synapse_transunet", synapse_transunet_datalist, "none", 9, SYNAPSE_CLASSES, training_slices=True),
        DatasetSpec("acdc", acdc_datalist, "mri", 4, ACDC_CLASSES, seeded_split=True),
        DatasetSpec("acdc_h5", acdc_h5_datalist, "none", 4, ACDC_CLASSES, training_slices=True),
        DatasetSpec("decathlon", decathlon_datalist, "ct"),
    )
}


def _spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def dataset_info(dataset: str, dataset_dir: str | None = None) -> DatasetSpec:
    """The registry entry of ``dataset``; for ``decathlon`` the classes (and the MRI preset for a dataset without a
    CT modality) are read from ``dataset.json`` where there is one.

    Args:
        dataset: a key of :data:`DATASETS`.
        dataset_dir: the dataset folder (or its ``dataset.json``); only read for ``decathlon``.

    Returns:
        a :class:`DatasetSpec`.

    Raises:
        ValueError: for an unknown dataset.
        DataError: for ``decathlon`` with a ``dataset_dir`` whose ``dataset.json`` is missing or unreadable.

    Example:
        >>> dataset_info("acdc").class_names
        ('rv', 'myo', 'lv')
    """
    spec = _spec(dataset)
    if dataset != "decathlon" or not dataset_dir:
        return spec
    meta = read_json(decathlon_json(dataset_dir), DataError)
    labels = {int(k): v for k, v in meta.get("labels", {}).items()}
    changes: dict[str, Any] = {}
    if labels:
        changes["num_classes"] = max(labels) + 1
        changes["class_names"] = tuple(labels.get(i, str(i)) for i in range(1, max(labels) + 1))
    modalities = [str(m).upper() for m in meta.get("modality", {}).values()]
    if modalities and "CT" not in modalities:
        changes["intensity"] = "mri"
    return dataclasses.replace(spec, **changes)


def get_datalist(dataset: str, dataset_dir: str, split: str, seed: int = 0) -> list[dict[str, str]]:
    """Items of ``split`` of ``dataset`` stored in ``dataset_dir``, as MONAI ``{"image", "label"}`` dicts.

    Validation and test items are whole volumes; training items are volumes, or 2D slice files where the dataset's
    ``training_slices`` is set (``synapse_transunet``, ``acdc_h5``).

    Args:
        dataset: a key of :data:`DATASETS`: ``synthetic``, ``synapse`` (raw BTCV), ``synapse_transunet``
            (TransUNet npz/h5), ``acdc`` (NIfTI, seeded 70/15/15 patient split), ``acdc_h5`` (SSL4MIS HDF5) or
            ``decathlon`` (``dataset.json``).
        dataset_dir: the dataset folder (the synthetic phantom is generated there if missing).
        split: ``training``, ``validation`` or ``test``.
        seed: seed of the patient split, for datasets that split their cases themselves (``acdc``).

    Returns:
        a non-empty list of dicts with ``image`` and ``label`` file paths (and ``case`` where the layout names one).

    Raises:
        ValueError: for an unknown dataset or split.
        DataError: for a missing folder or an empty list.

    Example:
        >>> items = get_datalist("synthetic", "/tmp/phantom", "validation")  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {SPLITS}")
    spec = _spec(dataset)
    if not Path(dataset_dir).exists() and dataset != "synthetic":
        raise DataError(f"{dataset_dir}: dataset folder not found")
    items = spec.datalist(dataset_dir, split, seed) if spec.seeded_split else spec.datalist(dataset_dir, split)
    if not items:
        raise DataError(f"{dataset_dir}: the '{split}' datalist of dataset '{dataset}' is empty")
    return items
