"""``SliceDataset``: every slice of every volume is one item, on top of a cache of preprocessed volumes; and the
bundle's training dataset, which is either that or a cache of volumes with random slice sampling."""

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import CacheDataset
from monai.transforms import apply_transform
from torch.utils.data import Dataset

__all__ = ["SliceDataset", "training_dataset"]


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


def training_dataset(
    data: Sequence[dict],
    transform: Sequence[Callable] | Callable,
    slice_transform: Callable | None = None,
    every_slice: bool = False,
    num_workers: int | None = 1,
) -> Dataset:
    """The bundle's training dataset (``train#dataset``), one entry for both sampling protocols, so that its datalist
    is ``train#dataset#data`` (the id MONAI Label replaces with its datastore's volumes).

    Args:
        data: datalist of ``{"image": ..., "label": ...}`` dicts.
        transform: with ``every_slice``, the deterministic volume preprocessing of :class:`SliceDataset`; otherwise
            the whole chain, random slice sampling included (cached up to its first random transform).
        slice_transform: per slice, with ``every_slice`` (see :class:`SliceDataset`); unused otherwise.
        every_slice: every slice once per epoch (the published protocol) or the volumes, sampled by ``transform``.
        num_workers: threads that fill the cache.

    Returns:
        a :class:`SliceDataset` or a ``monai.data.CacheDataset``.

    Example:
        >>> ds = training_dataset(datalist, volume_chain, SelectSliced(("image", "label")), every_slice=True)
    """
    if every_slice:
        if slice_transform is None:
            raise ValueError("training_dataset(every_slice=True) needs a slice_transform that selects the slice.")
        return SliceDataset(data, transform, slice_transform, num_workers=num_workers)
    return CacheDataset(list(data), transform, cache_rate=1.0, copy_cache=False, num_workers=num_workers)
