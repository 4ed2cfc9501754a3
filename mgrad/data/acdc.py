"""ACDC datalists: the NIfTI layout as distributed and the SSL4MIS HDF5 form."""

import re
from pathlib import Path

import numpy as np

from mgrad.data.errors import DataError, MissingSplitError

SPLIT_FRACTIONS = {"training": 0.70, "validation": 0.15, "test": 0.15}
_FRAME = re.compile(r"(patient\d+)_frame\d+\.nii(\.gz)?$")


def split_patients(patients: list[str], split: str, seed: int = 0) -> list[str]:
    """Seeded 70/15/15 split of sorted patient ids; every patient is in exactly one split."""
    order = np.random.default_rng(seed).permutation(sorted(patients))
    n_train = round(SPLIT_FRACTIONS["training"] * len(order))
    n_val = round(SPLIT_FRACTIONS["validation"] * len(order))
    bounds = {"training": (0, n_train), "validation": (n_train, n_train + n_val), "test": (n_train + n_val, len(order))}
    start, stop = bounds[split]
    return sorted(order[start:stop].tolist())


def _has_h5(dataset_dir: str) -> bool:
    return any(True for _ in Path(dataset_dir).glob("*/*.h5"))


def acdc_datalist(dataset_dir: str, split: str, seed: int = 0) -> list[dict[str, str]]:
    """ACDC NIfTI (``patientNNN/patientNNN_frameFF.nii.gz`` + ``_gt``, searched recursively), split by patient."""
    frames: dict[str, list[Path]] = {}
    for path in sorted(Path(dataset_dir).rglob("patient*_frame*.nii*")):
        match = _FRAME.match(path.name)
        if match and not path.name.endswith(("_gt.nii.gz", "_gt.nii")):
            frames.setdefault(match.group(1), []).append(path)
    if not frames:
        hint = "; its .h5 files look like the SSL4MIS copy: --dataset acdc_h5" if _has_h5(dataset_dir) else ""
        raise DataError(f"{dataset_dir}: no ACDC frames patientNNN/patientNNN_frameFF.nii.gz found{hint}")
    items = []
    for patient in split_patients(list(frames), split, seed):
        for image in frames[patient]:
            label = image.with_name(image.name.replace(".nii", "_gt.nii"))
            if not label.is_file():
                raise DataError(f"{image}: no ground truth {label.name} beside it")
            items.append({"image": str(image), "label": str(label), "case": image.name.split(".")[0]})
    return items


def _read_list(path: Path) -> list[str]:
    """Names in an SSL4MIS list file, one a line, without a ``.h5`` suffix."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n[: -len(".h5")] if n.endswith(".h5") else n for n in names]


def acdc_h5_datalist(dataset_dir: str, split: str) -> list[dict[str, str]]:
    """SSL4MIS ACDC: training = ``slices/*.h5`` named in ``train_slices.list`` (or of the volumes in ``train.list``);
    validation/test = ``volumes/*.h5`` named in ``val.list`` / ``test.list``."""
    root = Path(dataset_dir)
    if split == "training":
        if (root / "train_slices.list").is_file():
            names = _read_list(root / "train_slices.list")
        elif (root / "train.list").is_file():
            names = [
                p.stem for v in _read_list(root / "train.list") for p in sorted(root.glob(f"slices/{v}_slice_*.h5"))
            ]
        else:
            raise MissingSplitError(f"{root}: neither train_slices.list nor train.list")
        folder = root / "slices"
    else:
        list_file = root / ("val.list" if split == "validation" else "test.list")
        if not list_file.is_file():
            raise MissingSplitError(f"{list_file}: not found, so there is no '{split}' split")
        names, folder = _read_list(list_file), root / "volumes"
    return [{"image": str(folder / f"{n}.h5"), "label": str(folder / f"{n}.h5"), "case": n} for n in names]
