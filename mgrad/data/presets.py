"""Per-dataset presets the bundle and the trainer read: intensity preset, label map, classes, training item kind."""

import json
from pathlib import Path
from typing import Any, Dict, Optional

# raw BTCV id -> Synapse 8-organ index (TransUNet order); every BTCV id is listed so that unlisted ones become 0
BTCV_TO_SYNAPSE: Dict[int, int] = {
    0: 0,
    1: 7,
    2: 4,
    3: 3,
    4: 2,
    5: 0,
    6: 5,
    7: 8,
    8: 1,
    9: 0,
    10: 0,
    11: 6,
    12: 0,
    13: 0,
}
SYNAPSE_CLASSES = ["aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]
ACDC_CLASSES = ["rv", "myo", "lv"]

# preset: intensity preset of mgrad.transforms ("ct", "mri", "none"); label_map: raw label -> class index or None;
# num_classes and class_names: background included in num_classes, not in class_names;
# training_slices: the training items are 2D slice files (sample them with num_samples=1)
DATASETS: Dict[str, Dict[str, Any]] = {
    "synthetic": {
        "preset": "ct",
        "label_map": None,
        "num_classes": 9,
        "class_names": SYNAPSE_CLASSES,
        "training_slices": False,
    },
    "synapse": {
        "preset": "ct",
        "label_map": BTCV_TO_SYNAPSE,
        "num_classes": 9,
        "class_names": SYNAPSE_CLASSES,
        "training_slices": False,
    },
    "synapse_transunet": {
        "preset": "none",
        "label_map": None,
        "num_classes": 9,
        "class_names": SYNAPSE_CLASSES,
        "training_slices": True,
    },
    "acdc": {
        "preset": "mri",
        "label_map": None,
        "num_classes": 4,
        "class_names": ACDC_CLASSES,
        "training_slices": False,
    },
    "acdc_h5": {
        "preset": "none",
        "label_map": None,
        "num_classes": 4,
        "class_names": ACDC_CLASSES,
        "training_slices": True,
    },
    "decathlon": {
        "preset": "ct",
        "label_map": None,
        "num_classes": None,
        "class_names": None,
        "training_slices": False,
    },
}


def dataset_info(dataset: str, dataset_dir: Optional[str] = None) -> Dict[str, Any]:
    """``DATASETS[dataset]``; for ``decathlon`` the classes (and MRI preset) come from ``dataset.json`` if present."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; choose one of {sorted(DATASETS)}")
    info = dict(DATASETS[dataset])
    path = Path(dataset_dir) if dataset_dir else None
    if dataset == "decathlon" and path is not None:
        path = path if path.suffix == ".json" else path / "dataset.json"
        if path.is_file():
            meta = json.loads(path.read_text())
            labels = {int(k): v for k, v in meta.get("labels", {}).items()}
            if labels:
                info["num_classes"] = max(labels) + 1
                info["class_names"] = [labels.get(i, str(i)) for i in range(1, max(labels) + 1)]
            modalities = [str(m).upper() for m in meta.get("modality", {}).values()]
            if modalities and "CT" not in modalities:
                info["preset"] = "mri"
    return info
