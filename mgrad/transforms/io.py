"""``LoadVolumed``: MONAI ``LoadImage`` per key, with the npz/h5 readers picked by suffix and errors naming the file."""

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform

from mgrad.data.loading import load_file, volume_loader


class LoadVolumed(MapTransform):
    """Loads each key's file as a MetaTensor: NIfTI and the other MONAI formats, plus ``.npz``/``.h5`` whose array
    named like the key is read (so ``{"image": f, "label": f}`` works for files holding both).

    Arrays come with the slice axis last (see :mod:`mgrad.data.readers`); channel handling is left to
    ``EnsureChannelFirstd``.
    """

    def __init__(self, keys: KeysCollection, dtype: Any = np.float32, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loaders: dict[Hashable, LoadImage] = {key: volume_loader(str(key), dtype) for key in self.keys}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_file(self.loaders[key], d[key])
        return d
