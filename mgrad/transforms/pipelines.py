"""The two transform chains the bundle and the trainer build: deterministic 3D preprocessing, and training."""

from collections.abc import Mapping

import numpy as np
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, MapLabelValued, Orientationd, Resized

from mgrad.transforms.antialias import SlabAntiAliasd
from mgrad.transforms.augment import Augment2Dd
from mgrad.transforms.intensity import intensity_transforms
from mgrad.transforms.io import LoadVolumed
from mgrad.transforms.slices import ForegroundSlicesd, RandSliceSamplerd
from mgrad.transforms.validate import ValidateCased


def volume_transforms(
    preset: str,
    spatial_size: int,
    label_map: Mapping[int, int] | None = None,
    with_label: bool = True,
    num_classes: int | None = None,
    require_volume: bool = True,
) -> Compose:
    """Deterministic 3D preprocessing to ``(C, H, W, D)`` with H = W = ``spatial_size`` and D kept.

    Load (NIfTI/npz/h5) -> channel first -> RAS -> validate (file named in any error) -> intensity ``preset`` ->
    in-plane resize -> ``label_map``. The spatial steps are MONAI invertible transforms, so
    ``Invertd(keys="pred", transform=this, orig_keys="image")`` maps a ``SliceInferer(spatial_dim=2)`` output back
    to the original geometry. ``num_classes`` bounds the label values (after ``label_map``); ``require_volume``
    rejects single-slice files. Image and label are compared after reorientation, so files that store the same grid
    in different axis orders (e.g. an LPS CT and an LAS segmentation) are accepted.
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["trilinear", "nearest-exact"][: len(keys)]
    chain: list = [
        LoadVolumed(keys),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=None),  # the MetaTensor's space (RAS or LPS) names the axes
        ValidateCased(keys, num_classes if label_map is None else None, label_map, require_volume),
        *intensity_transforms(preset, "image"),
        SlabAntiAliasd("image", spatial_size),
        Resized(keys, spatial_size=(spatial_size, spatial_size, -1), mode=modes, anti_aliasing=False),
    ]
    if with_label and label_map is not None:
        orig = sorted(label_map)
        chain.append(MapLabelValued("label", orig_labels=orig, target_labels=[label_map[k] for k in orig]))
    chain.append(EnsureTyped(keys, dtype=np.float32))
    return Compose(chain)


def train_transforms(
    preset: str,
    spatial_size: int,
    num_samples: int,
    pos_fraction: float | None,
    label_map: Mapping[int, int] | None = None,
    augment: bool = True,
    num_classes: int | None = None,
) -> Compose:
    """:func:`volume_transforms` (with labels, slice files allowed) + foreground index -> ``num_samples`` random
    slices (``pos_fraction`` of them with foreground; ``None``: uniform) -> 2D augmentation -> plain tensors.

    Yields dicts with ``image`` ``(C, H, W)`` float32 and ``label`` ``(1, H, W)`` float32 class indices. Everything
    before the sampler is deterministic, so ``CacheDataset`` decodes and preprocesses each volume once; the random
    part never modifies the cached volume, so ``CacheDataset(copy_cache=False)`` is safe and saves a deep copy of it
    per draw. Use ``num_samples=1`` for datasets whose training items are 2D slice files.
    """
    chain = list(volume_transforms(preset, spatial_size, label_map, True, num_classes, require_volume=False).transforms)
    chain += [ForegroundSlicesd("label"), RandSliceSamplerd(("image", "label"), "label", num_samples, pos_fraction)]
    if augment:
        chain.append(Augment2Dd("image", "label"))
    chain.append(EnsureTyped(("image", "label"), dtype=np.float32, track_meta=False))
    return Compose(chain)
