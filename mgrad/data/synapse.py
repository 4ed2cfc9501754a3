"""Synapse (BTCV abdomen) datalists: the raw BTCV layout and TransUNet's preprocessed copy."""

from pathlib import Path

from mgrad.data.errors import DataError, MissingSplitError

# TransUNet's split of the 30 labelled BTCV cases
SYNAPSE_TRAIN_CASES = ["0005", "0006", "0007", "0009", "0010", "0021", "0023", "0024", "0026"]
SYNAPSE_TRAIN_CASES += ["0027", "0028", "0030", "0031", "0033", "0034", "0037", "0039", "0040"]
SYNAPSE_TEST_CASES = ["0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038"]


def _btcv_root(dataset_dir: Path) -> Path:
    """The folder holding ``img/`` and ``label/`` (the dataset folder, or its ``Training``/``RawData/Training``)."""
    for root in (dataset_dir, dataset_dir / "Training", dataset_dir / "RawData" / "Training"):
        if (root / "img").is_dir() and (root / "label").is_dir():
            return root
    raise DataError(
        f"{dataset_dir}: no img/ and label/ folders (raw BTCV layout img/img0001.nii.gz, label/label0001...)"
    )


def synapse_datalist(dataset_dir: str, split: str) -> list[dict[str, str]]:
    """Raw BTCV: TransUNet's 18 training cases, or its 12 test cases for ``validation`` and ``test``.

    TransUNet has no validation split; ``validation`` here is the test set, so report test numbers only from a
    model not selected on it. Labels are raw BTCV ids: remap them with ``DATASETS["synapse"].label_map``.
    """
    root = _btcv_root(Path(dataset_dir))
    cases = SYNAPSE_TRAIN_CASES if split == "training" else SYNAPSE_TEST_CASES
    items = [
        {"image": str(root / "img" / f"img{c}.nii.gz"), "label": str(root / "label" / f"label{c}.nii.gz"), "case": c}
        for c in cases
    ]
    missing = [p for item in items for p in (item["image"], item["label"]) if not Path(p).is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} file(s) of the TransUNet {split} split missing: {', '.join(missing)}")
    return items


def synapse_transunet_datalist(dataset_dir: str, split: str) -> list[dict[str, str]]:
    """TransUNet's copy: ``train_npz/*.npz`` 2D slices for training, ``test_vol_h5/*.npy.h5`` volumes otherwise."""
    root = Path(dataset_dir)
    folder, pattern = ("train_npz", "*.npz") if split == "training" else ("test_vol_h5", "*.h5")
    if not (root / folder).is_dir():
        raise MissingSplitError(f"{root}: no {folder}/ folder for split '{split}'")
    return [
        {"image": str(p), "label": str(p), "case": p.name.split(".")[0]} for p in sorted((root / folder).glob(pattern))
    ]
