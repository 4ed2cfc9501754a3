"""Loading with MONAI's loader and mgrad's readers registered (DICOM series, npz, h5): :func:`load_imaged` for the
pipelines (MONAI's own ``LoadImaged``, which MONAI Label and MONAI Deploy replace with their loaders), and
:class:`LoadVolumed` for checks that need a :class:`~mgrad.data.errors.DataError` naming the file."""

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import LoadImage, LoadImaged, MapTransform

from mgrad.data.loading import load_file, volume_loader
from mgrad.data.readers import image_readers


def load_imaged(keys: KeysCollection, dtype: Any = np.float32) -> list[LoadImaged]:
    """One MONAI ``LoadImaged`` per key, each with :func:`mgrad.data.image_readers` for that key registered.

    MONAI's loader still picks the reader by suffix (a DICOM series: by being a folder), so the reader of a file's
    type reports its error. In a config: ``{"_target_": "LoadImaged", "keys": "image", "image_only": true,
    "reader": {"_target_": "mgrad.data.FileTypeReader", "key": "image"}}`` does the same.

    Returns:
        ``LoadImaged(key, image_only=True, dtype=dtype)`` transforms, one per key.

    Example:
        >>> Compose([*load_imaged("image"), EnsureChannelFirstd("image")])({"image": "/data/CT_series"})
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
    both). A missing or unreadable file raises :class:`~mgrad.data.errors.DataError` naming it.

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
