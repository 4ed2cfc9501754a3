"""``LoadVolumed``: MONAI ``LoadImage`` per key, with the npz/h5 readers picked by suffix and errors naming the file."""

from pathlib import Path
from typing import Any, Dict, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, MapTransform, Orientationd

from mgrad.data.errors import DataError
from mgrad.data.readers import H5Reader, NpzReader


def load_file(loader: LoadImage, path: Any) -> torch.Tensor:
    """``loader(path)``; a missing, unreadable or corrupt file raises :class:`DataError` naming it."""
    if isinstance(path, (str, Path)) and not Path(path).exists():
        raise DataError(f"{path}: file not found")
    try:
        return loader(path)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        if "cannot find a suitable reader" in reason:
            reason = "no reader for this file type (expected .nii/.nii.gz, .npz or .h5)"
        raise DataError(f"{path}: cannot be read: {type(e).__name__}: {reason}") from e


class LoadVolumed(MapTransform):
    """Loads each key's file as a MetaTensor: NIfTI and the other MONAI formats, plus ``.npz``/``.h5`` whose array
    named like the key is read (so ``{"image": f, "label": f}`` works for files holding both).

    Arrays come with the slice axis last (see :mod:`mgrad.data.readers`); channel handling is left to
    ``EnsureChannelFirstd``.
    """

    def __init__(self, keys: KeysCollection, dtype: Any = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loaders: Dict[Hashable, LoadImage] = {}
        for key in self.keys:
            loader = LoadImage(image_only=True, dtype=dtype)
            loader.register(NpzReader(str(key)))
            loader.register(H5Reader(str(key)))  # registered last = tried first
            self.loaders[key] = loader

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_file(self.loaders[key], d[key])
        return d


def load_ras(keys: KeysCollection) -> Compose:
    """Load ``keys`` channel-first and reoriented to RAS, as the volume pipelines do (for checks and scoring)."""
    return Compose([LoadVolumed(keys), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS")])
