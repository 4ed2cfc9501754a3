"""``get_datalist``: one entry point for every supported layout, returning MONAI ``{"image", "label"}`` dicts."""

import json
from pathlib import Path
from typing import Dict, List

from monai.data import load_decathlon_datalist

from mgrad.data.acdc import acdc_datalist, acdc_h5_datalist
from mgrad.data.errors import DataError, MissingSplitError
from mgrad.data.synapse import synapse_datalist, synapse_transunet_datalist

SPLITS = ("training", "validation", "test")
DATALIST_NAMES = ("synthetic", "synapse", "synapse_transunet", "acdc", "acdc_h5", "decathlon")


def decathlon_json(dataset_dir: str) -> Path:
    """``dataset_dir`` if it is a ``.json`` file, else ``dataset_dir/dataset.json``."""
    path = Path(dataset_dir)
    return path if path.suffix == ".json" else path / "dataset.json"


def decathlon_datalist(dataset_dir: str, split: str) -> List[Dict[str, str]]:
    """The ``split`` list of a decathlon-style ``dataset.json`` (paths relative to the json's folder)."""
    path = decathlon_json(dataset_dir)
    if not path.is_file():
        raise DataError(f"{path}: dataset.json not found")
    try:
        lists = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from e
    if split not in lists:
        raise MissingSplitError(f"{path}: no '{split}' list")
    if not lists[split]:
        return []
    return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split)


def synthetic_datalist(dataset_dir: str, split: str) -> List[Dict[str, str]]:
    """The synthetic phantom in ``dataset_dir``, generated there first if it has no ``dataset.json`` yet."""
    if not decathlon_json(dataset_dir).is_file():
        from mgrad.data.synthetic import make_dataset

        make_dataset(dataset_dir)
    return decathlon_datalist(dataset_dir, split)


def get_datalist(dataset: str, dataset_dir: str, split: str, seed: int = 0) -> List[Dict[str, str]]:
    """Items of ``split`` (``training``, ``validation``, ``test``) of ``dataset`` stored in ``dataset_dir``.

    ``dataset`` is one of ``synthetic``, ``synapse`` (raw BTCV), ``synapse_transunet`` (TransUNet npz/h5),
    ``acdc`` (NIfTI, seeded 70/15/15 patient split, ``seed``), ``acdc_h5`` (SSL4MIS HDF5) or ``decathlon``
    (``dataset.json``). Validation and test items are whole volumes; training items are volumes, or 2D slice files
    for ``synapse_transunet`` and ``acdc_h5``. Raises :class:`DataError` for a missing folder or an empty list.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {SPLITS}")
    if not Path(dataset_dir).exists() and dataset != "synthetic":
        raise DataError(f"{dataset_dir}: dataset folder not found")
    builders = {
        "synthetic": synthetic_datalist,
        "synapse": synapse_datalist,
        "synapse_transunet": synapse_transunet_datalist,
        "acdc": lambda d, s: acdc_datalist(d, s, seed),
        "acdc_h5": acdc_h5_datalist,
        "decathlon": decathlon_datalist,
    }
    if dataset not in builders:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {DATALIST_NAMES}")
    items = builders[dataset](dataset_dir, split)
    if not items:
        raise DataError(f"{dataset_dir}: the '{split}' datalist of dataset '{dataset}' is empty")
    return items
