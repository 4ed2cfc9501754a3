"""Checks of one loaded case (channel-first arrays with their affines); each returns problems per file."""

from collections.abc import Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

from mgrad.data.loading import GRID_ATOL, affine_difference

MAX_LABEL = 65535  # larger label values are reported without counting them


def filename(x: torch.Tensor, default: str = "<array>") -> str:
    """The ``filename_or_obj`` of a loaded MetaTensor."""
    return str(x.meta.get("filename_or_obj", default)) if isinstance(x, MetaTensor) else default


def image_problems(image: torch.Tensor, require_volume: bool = True, channels: int | None = 1) -> list[str]:
    """Dimensionality and channel count (``None``: any) of a channel-first ``(C, H, W, D)`` image and finiteness of
    its values."""
    problems = []
    shape = tuple(image.shape[1:])
    if channels is not None and image.shape[0] != channels:
        problems.append(
            f"{image.shape[0]} channels of shape {shape} (a 4D file: a time series or several images?), expected "
            f"{channels}"
        )
    if len(shape) != 3:
        problems.append(f"{len(shape)}D image of shape {shape}, expected a 3D volume (H, W, D)")
    elif require_volume and shape[-1] == 1:
        problems.append(f"a single 2D slice (shape {shape}) where a 3D volume is expected")
    values = convert_to_numpy(image)
    if not np.isfinite(values).all():
        problems.append(f"{int(np.isnan(values).sum())} NaN and {int(np.isinf(values).sum())} Inf intensities")
    return problems


def label_problems(
    label: torch.Tensor, num_classes: int | None = None, label_map: Mapping[int, int] | None = None
) -> list[str]:
    """One channel, integer values, each in ``label_map`` (if given) or in ``0..num_classes-1`` (if given)."""
    if label.shape[0] != 1:
        return [f"label has {label.shape[0]} channels, expected 1"]
    values = convert_to_numpy(label).ravel()
    if not np.isfinite(values).all():
        return ["NaN or Inf label values"]
    fractional = values[values != np.round(values)]
    if fractional.size:
        return [f"non-integer label values (e.g. {fractional[0]:g}), expected class indices"]
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > MAX_LABEL:
        return [f"label values in [{low}, {high}], expected 0..{num_classes - 1 if num_classes else MAX_LABEL}"]
    present = np.flatnonzero(np.bincount(values.astype(np.int64)))
    if label_map is not None:
        bad = [int(v) for v in present if int(v) not in label_map]
        return [f"label values {bad} not in the label map {sorted(label_map)}"] if bad else []
    if num_classes is not None:
        bad = [int(v) for v in present if v >= num_classes]
        return [f"label values {bad} outside 0..{num_classes - 1}"] if bad else []
    return []


def pair_problems(image: torch.Tensor, label: torch.Tensor, atol: float = GRID_ATOL) -> list[str]:
    """Same spatial shape and (for MetaTensors) the same affine, within ``atol`` mm; each problem names the image."""
    name = filename(image, "<image>")
    if tuple(image.shape[1:]) != tuple(label.shape[1:]):
        return [f"label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])} of {name}"]
    if affine_difference(image, label) > atol:
        return [
            f"label affine differs from the image affine of {name} (max difference "
            f"{affine_difference(image, label):.4g} mm)"
        ]
    return []


def case_problems(
    image: torch.Tensor | None,
    label: torch.Tensor | None,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    require_volume: bool = True,
    channels: int | None = 1,
) -> dict[str, list[str]]:
    """All problems of one case, keyed by file; image/label pair checks are reported under the label file and name
    the image file too. ``channels`` is the number of image channels the network takes (``None``: any)."""
    problems: dict[str, list[str]] = {}
    if image is not None:
        problems[filename(image, "<image>")] = image_problems(image, require_volume, channels)
    if label is not None:
        found = label_problems(label, num_classes, label_map)
        if image is not None:
            found += pair_problems(image, label)
        problems.setdefault(filename(label, "<label>"), []).extend(found)
    return {f: p for f, p in problems.items() if p}
