"""Loading with MONAI's ``LoadImaged`` and mgrad's readers registered (DICOM series, npz, h5): ``load_imaged`` for
the pipelines (so MONAI Label and MONAI Deploy can swap the loader for their own), ``LoadVolumed`` for checks that
need a :class:`DataError` naming the file."""

from pathlib import Path
from typing import Any, Dict, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, MapTransform, Orientationd

from mgrad.data.errors import DataError, read_error
from mgrad.data.readers import image_readers


def load_file(loader: LoadImage, path: Any) -> torch.Tensor:
    """``loader(path)``; a missing, unreadable or corrupt file raises :class:`DataError` naming it."""
    if isinstance(path, (str, Path)) and not Path(path).exists():
        raise DataError(f"{path}: file not found")
    try:
        return loader(path)
    except Exception as e:
        raise read_error(path, e) from e


def load_imaged(keys: KeysCollection, dtype: Any = np.float32) -> list[LoadImaged]:
    """One MONAI ``LoadImaged`` per key, each with :func:`mgrad.data.image_readers` for that key registered.

    MONAI's loader still picks the reader by suffix (DICOM series: a folder), so a file's own reader reports its
    error. Returns ``LoadImaged(key, image_only=True, dtype=dtype)`` transforms, one per key.
    """
    transforms = []
    for key in [keys] if isinstance(keys, (str, int)) else list(keys):
        transform = LoadImaged(key, image_only=True, dtype=dtype)
        for reader in image_readers(str(key)):
            transform.register(reader)
        transforms.append(transform)
    return transforms


class LoadVolumed(MapTransform):
    """Loads each key's file as a MetaTensor: NIfTI and the other MONAI formats, DICOM series folders, plus
    ``.npz``/``.h5`` whose array named like the key is read (so ``{"image": f, "label": f}`` works for files holding
    both). A missing or unreadable file raises :class:`DataError` naming it.

    Arrays come with the slice axis last (see :mod:`mgrad.data.readers`); channel handling is left to
    ``EnsureChannelFirstd``.
    """

    def __init__(self, keys: KeysCollection, dtype: Any = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        transforms = load_imaged(self.keys, dtype)
        self.loaders: Dict[Hashable, LoadImage] = {key: t._loader for key, t in zip(self.keys, transforms)}

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_file(self.loaders[key], d[key])
        return d


def load_ras(keys: KeysCollection) -> Compose:
    """Load ``keys`` channel-first and reoriented to RAS, as the volume pipelines do (for checks and scoring)."""
    return Compose([LoadVolumed(keys), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS")])
