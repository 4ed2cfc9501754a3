"""Volume -> 2D slices: foreground slice index (cached) and a random slice sampler returning k samples per draw."""

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable


def foreground_slices(label: torch.Tensor) -> np.ndarray:
    """Bool per slice (last axis) of a channel-first label: does the slice hold any non-zero voxel?"""
    lab = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
    return (lab != 0).reshape(-1, lab.shape[-1]).any(0).cpu().numpy()


class ForegroundSlicesd(MapTransform):
    """Stores :func:`foreground_slices` of ``label_key`` under ``fg_key``; deterministic, so ``CacheDataset`` keeps
    it and the sampler need not scan the volume on every draw."""

    def __init__(self, label_key: str = "label", fg_key: str = "fg_slices") -> None:
        super().__init__(label_key)
        self.label_key, self.fg_key = label_key, fg_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.fg_key] = foreground_slices(d[self.label_key])
        return d


class RandSliceSamplerd(Randomizable, MapTransform):
    """Draws ``num_samples`` random slices along the last axis of ``(C, H, W, D)`` arrays, returning a list of dicts
    with ``(C, H, W)`` tensors (MONAI's DataLoader flattens the list, as for ``RandCropByPosNegLabeld``).

    With ``pos_fraction`` ``p``, each sample comes from a slice holding foreground with probability ``p`` and from a
    slice without any otherwise (from whichever kind exists if one is missing); ``None`` samples slices uniformly,
    as TransUNet does. The slice index is returned under ``"slice_index"``; ``fg_key`` (from
    :class:`ForegroundSlicesd`) is used if present and dropped from the samples.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_key: str = "label",
        num_samples: int = 1,
        pos_fraction: float | None = None,
        fg_key: str = "fg_slices",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if pos_fraction is not None and not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1] or None, got {pos_fraction}")
        self.label_key, self.num_samples, self.pos_fraction, self.fg_key = label_key, num_samples, pos_fraction, fg_key
        self._indices: np.ndarray = np.zeros(0, int)

    def randomize(self, fg: np.ndarray) -> None:
        if self.pos_fraction is None:
            self._indices = self.R.randint(len(fg), size=self.num_samples)
            return
        pos, neg = np.flatnonzero(fg), np.flatnonzero(~fg)
        want_pos = self.R.rand(self.num_samples) < self.pos_fraction
        pools = [(pos if p else neg) if (pos.size and neg.size) else (pos if pos.size else neg) for p in want_pos]
        self._indices = np.array([pool[self.R.randint(pool.size)] for pool in pools])

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        fg = d.pop(self.fg_key, None)
        self.randomize(np.asarray(fg if fg is not None else foreground_slices(d[self.label_key]), bool))
        samples = []
        for z in self._indices.tolist():
            sample = {k: v for k, v in d.items() if k not in self.keys}
            for key in self.key_iterator(d):
                sample[key] = _slice(d[key], z)
            sample["slice_index"] = z
            samples.append(sample)
        return samples


def _slice(x: torch.Tensor, z: int) -> torch.Tensor:
    """Slice ``z`` of the last axis as a new 2D (C, H, W) tensor; a MetaTensor keeps its file name."""
    if not isinstance(x, MetaTensor):
        return torch.as_tensor(x)[..., z].clone()
    return MetaTensor(x.as_tensor()[..., z].clone(), meta={"filename_or_obj": x.meta.get("filename_or_obj", "")})
