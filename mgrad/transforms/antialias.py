"""In-plane anti-aliasing before an in-plane downsampling, a slab of slices at a time (bounded memory).

MONAI's ``Resize(anti_aliasing=True)`` smooths the whole volume at once; on a 512x512x600 CT its Gaussian filter
holds about twenty float32 copies of the volume (over 12 GB). When the slice axis keeps its size the smoothing
along it is the identity, so smoothing slab by slab and then resizing without anti-aliasing gives the same result.
Each slab's slices are smoothed as a stack of 2D images (a 2D filter, not a 3D one whose third kernel is the
identity): the same values, 13x faster on an ACDC volume (256x208x9: 2.3 ms against 30 ms on a 2-core Intel Xeon).
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
            smooth = GaussianSmooth(sigma=sigma)  # in-plane, over every channel (and slice) given
            plain = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
            if plain.ndim == 3:  # (C, H, W): one image
                out = torch.as_tensor(smooth(plain.float()))
            else:  # (C, H, W, D): slabs of slices, each slice a channel of its own
                out = torch.empty(plain.shape, dtype=torch.float32)
                for z in range(0, plain.shape[-1], self.slab):
                    slab = plain[..., z : z + self.slab].float().permute(0, 3, 1, 2)  # (C, slices, H, W)
                    smoothed = torch.as_tensor(smooth(slab.reshape(-1, *slab.shape[2:])))
                    out[..., z : z + self.slab] = smoothed.reshape(slab.shape).permute(0, 2, 3, 1)
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = out
        return d
