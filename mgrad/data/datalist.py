"""Decathlon-style datalists (``dataset.json``) and the synthetic phantom's, generated on first use."""

from pathlib import Path

from monai.data import load_decathlon_datalist

from mgrad.data.errors import DataError, MissingSplitError
from mgrad.data.synthetic import make_dataset
from mgrad.writers import read_json

SPLITS = ("training", "validation", "test")


def decathlon_json(dataset_dir: str) -> Path:
    """``dataset_dir`` if it is a ``.json`` file, else ``dataset_dir/dataset.json``."""
    path = Path(dataset_dir)
    return path if path.suffix == ".json" else path / "dataset.json"


def decathlon_datalist(dataset_dir: str, split: str) -> list[dict[str, str]]:
    """The ``split`` list of a decathlon-style ``dataset.json`` (paths relative to the json's folder)."""
    path = decathlon_json(dataset_dir)
    lists = read_json(path, DataError)
    if split not in lists:
        raise MissingSplitError(f"{path}: no '{split}' list")
    if not lists[split]:
        return []
    return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split)


def synthetic_datalist(dataset_dir: str, split: str) -> list[dict[str, str]]:
    """The synthetic phantom in ``dataset_dir``, generated there first if it has no ``dataset.json`` yet."""
    if not decathlon_json(dataset_dir).is_file():
        make_dataset(dataset_dir)
    return decathlon_datalist(dataset_dir, split)
