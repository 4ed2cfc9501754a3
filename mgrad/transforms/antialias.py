"""In-plane anti-aliasing before an in-plane downsampling, a slab of slices at a time (bounded memory).

MONAI's ``Resize(anti_aliasing=True)`` smooths the whole volume at once; on a 512x512x600 CT its Gaussian filter
holds about twenty float32 copies of the volume (over 12 GB). When the slice axis keeps its size the smoothing
along it is the identity, so smoothing slab by slab and then resizing without anti-aliasing gives the same result.
"""

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, MapTransform

__all__ = ["SlabAntiAliasd"]


class SlabAntiAliasd(MapTransform):
    """The Gaussian smoothing ``Resized(spatial_size=(size, size, -1), anti_aliasing=True)`` applies before
    shrinking ``(C, H, W, D)`` images in-plane (sigma ``max(0, (H / size - 1) / 2)`` per in-plane axis, as
    ``skimage.transform.resize``), computed ``slab`` slices at a time; follow it with
    ``Resized(..., anti_aliasing=False)``. Images not larger than ``size`` in-plane pass unchanged.

    Args:
        keys: the images to smooth (never labels).
        spatial_size: the in-plane size the following ``Resized`` produces.
        slab: slices smoothed together.

    Example:
        >>> chain = [SlabAntiAliasd("image", 96), Resized("image", (96, 96, -1), anti_aliasing=False)]
    """

    def __init__(self, keys: KeysCollection, spatial_size: int, slab: int = 8, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if slab < 1:
            raise ValueError(f"slab must be at least 1, got {slab}")
        self.spatial_size, self.slab = int(spatial_size), slab

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            sigma = [max(0.0, (s / self.spatial_size - 1) / 2) for s in img.shape[1:3]]
            if not any(sigma):
                continue
            smooth = GaussianSmooth(sigma=[*sigma, 0.0][: img.ndim - 1])
            plain = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            out = torch.empty(plain.shape, dtype=torch.float32)
            for z in range(0, plain.shape[-1], self.slab):
                out[..., z : z + self.slab] = torch.as_tensor(smooth(plain[..., z : z + self.slab].float()))
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = out
        return d
