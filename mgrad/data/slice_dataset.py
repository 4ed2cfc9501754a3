"""``SliceDataset``: every slice of every volume is one item, on top of a cache of preprocessed volumes."""

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import CacheDataset
from monai.transforms import apply_transform
from torch.utils.data import Dataset

__all__ = ["SliceDataset"]


class SliceDataset(Dataset):
    """A map-style dataset over ``(volume, slice)`` pairs: item ``i`` is one 2D slice of one volume.

    Each volume is decoded and preprocessed once by ``transform`` (deterministic; its results are cached in a MONAI
    ``CacheDataset``), then item ``i``, slice ``z`` of volume ``v``, is
    ``slice_transform({**volume, "volume_index": v, "slice_index": z})``, which selects the slice (e.g.
    :class:`mgrad.transforms.SelectSliced`) and may augment it. The length is the total number of slices along
    the last axis of ``depth_key``, so a ``DataLoader(shuffle=True)`` visits every slice once per epoch, in batches
    drawn across all volumes with no foreground bias, as the published training does. A dataset of single-slice
    files (depth 1) gives one item per file.

    Args:
        data: datalist of ``{"image": ..., "label": ...}`` dicts (volumes or 2D slice files).
        transform: deterministic preprocessing to channel-first ``(C, H, W, D)`` arrays: a callable, a list of
            them (composed in order, as the bundle's ``train#volume_transforms``) or ``None``.
        slice_transform: applied to each item's dict; it must select the slice.
        depth_key: the key whose last axis counts the slices.
        num_workers: threads that fill the cache (``None``: MONAI's default).

    Example:
        >>> import torch
        >>> from mgrad.transforms import SelectSliced
        >>> data = [{"image": torch.rand(1, 8, 8, d), "label": torch.zeros(1, 8, 8, d)} for d in (3, 5)]
        >>> ds = SliceDataset(data, transform=None, slice_transform=SelectSliced(("image", "label")))
        >>> len(ds), tuple(ds[4]["image"].shape), ds[4]["slice_index"]
        (8, (1, 8, 8), 1)
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Sequence[Callable] | Callable | None,
        slice_transform: Callable,
        depth_key: str = "image",
        num_workers: int | None = 1,
    ) -> None:
        self.volumes = CacheDataset(
            list(data), transform, cache_rate=1.0, copy_cache=False, num_workers=num_workers, progress=False
        )
        self.slice_transform = slice_transform
        self.index: list[tuple[int, int]] = []
        for v in range(len(self.volumes)):
            depth = int(self.volumes[v][depth_key].shape[-1])
            self.index += [(v, z) for z in range(depth)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        v, z = self.index[i]
        return apply_transform(self.slice_transform, {**self.volumes[v], "volume_index": v, "slice_index": z})
