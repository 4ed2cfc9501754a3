"""Cross-validation folds of a dataset's training data, split by patient (seeded, reproducible)."""

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgrad.data.datasets import get_datalist
from mgrad.data.errors import DataError
from mgrad.writers import write_json

__all__ = ["fold_datalist", "patient_id", "split_folds", "write_split"]

_PATIENT = re.compile(r"(patient\d+)")
_SLICE = re.compile(r"_slice_?\d+$")


def _stem(item: Mapping[str, Any]) -> str:
    name = str(item.get("case") or Path(str(item["image"])).name)
    for suffix in (".nii.gz", ".nii", ".npy.h5", ".h5", ".npz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def patient_id(item: Mapping[str, Any]) -> str:
    """The patient an item belongs to: ``patientNNN`` where the name holds it (ACDC: both frames of a patient),
    else the case name without a ``_slice_N`` suffix (2D slice files of one volume)."""
    stem = _stem(item)
    match = _PATIENT.search(stem)
    return match.group(1) if match else _SLICE.sub("", stem)


def split_folds(
    items: Sequence[Mapping[str, Any]], num_folds: int, fold: int, seed: int = 0
) -> tuple[list[dict], list[dict], dict[str, list[str]]]:
    """Fold ``fold`` of ``num_folds``: patients shuffled with ``seed`` and dealt round-robin to the folds.

    Args:
        items: the training datalist.
        num_folds: number of folds (at least 2, at most the number of patients).
        fold: the held-out fold, ``0 <= fold < num_folds``.
        seed: the shuffle's seed; the same items and seed always give the same folds.

    Returns:
        ``(training items, validation items, {"training": patients, "validation": patients})``; every patient is
        held out in exactly one fold.

    Example:
        >>> train, val, patients = split_folds(items, num_folds=5, fold=0)  # doctest: +SKIP
    """
    patients = sorted({patient_id(item) for item in items})
    if not 2 <= num_folds <= len(patients):
        raise ValueError(f"num_folds must be between 2 and the number of patients ({len(patients)}), got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
    order = np.random.default_rng(seed).permutation(patients).tolist()
    held_out = set(order[fold::num_folds])
    training = [dict(item) for item in items if patient_id(item) not in held_out]
    validation = [dict(item) for item in items if patient_id(item) in held_out]
    return training, validation, {"training": sorted(set(patients) - held_out), "validation": sorted(held_out)}


def _volumes(items: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Whole-volume items for held-out 2D slice files: ``../volumes/<volume>.h5`` beside their folder (SSL4MIS)."""
    volumes: dict[str, dict] = {}
    for item in items:
        stem = _SLICE.sub("", _stem(item))
        path = Path(str(item["image"])).parent.parent / "volumes" / f"{stem}.h5"
        if not path.is_file():
            raise DataError(f"{item['image']}: no whole volume {path} to validate the fold on")
        volumes[stem] = {"image": str(path), "label": str(path), "case": stem}
    return list(volumes.values())


def fold_datalist(
    dataset: str, dataset_dir: str, split: str, num_folds: int | None, fold: int = 0, seed: int = 0
) -> list[dict]:
    """The ``training`` or ``validation`` items of a fold of ``dataset``'s training data, or, with ``num_folds``
    ``None``, the dataset's own ``split`` (:func:`mgrad.data.get_datalist`).

    Validation items are whole volumes: held-out 2D slice files (``acdc_h5``) are replaced by their volumes.

    Example:
        >>> fold_datalist("acdc", "/data/ACDC", "validation", num_folds=5, fold=2)  # doctest: +SKIP
    """
    if num_folds is None:
        return get_datalist(dataset, dataset_dir, split, seed)
    if split not in ("training", "validation"):
        raise ValueError(f"a fold has a 'training' and a 'validation' part, not '{split}'")
    training, validation, _ = split_folds(get_datalist(dataset, dataset_dir, "training", seed), num_folds, fold, seed)
    if split == "training":
        return training
    slices = any(_SLICE.search(_stem(item)) for item in validation)
    return _volumes(validation) if slices else validation


def write_split(
    path: str | os.PathLike, dataset: str, dataset_dir: str, num_folds: int | None, fold: int = 0, seed: int = 0
) -> dict[str, Any] | None:
    """Write the fold's patients and items as JSON to ``path`` (nothing without ``num_folds``); returns what it
    wrote."""
    if num_folds is None:
        return None
    items = get_datalist(dataset, dataset_dir, "training", seed)
    _, _, patients = split_folds(items, num_folds, fold, seed)
    split = {
        "dataset": dataset,
        "num_folds": num_folds,
        "fold": fold,
        "seed": seed,
        "patients": patients,
        "training": fold_datalist(dataset, dataset_dir, "training", num_folds, fold, seed),
        "validation": fold_datalist(dataset, dataset_dir, "validation", num_folds, fold, seed),
    }
    write_json(path, split)
    return split
