"""Loading files as the pipelines see them: channel-first MetaTensors in RAS, with errors that name the file.

One loader serves the data checks and the scoring (:func:`load_ras`, :func:`load_pair`), and one tolerance
(:data:`GRID_ATOL`) decides whether two files lie on the same voxel grid.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

from mgrad.data.errors import DataError, read_error
from mgrad.data.readers import carries_spacing, image_readers

__all__ = ["GRID_ATOL", "Pair", "affine_difference", "load_file", "load_pair", "load_ras", "relabel", "volume_loader"]

GRID_ATOL = 1e-3  # mm: the largest affine difference of two files on the same grid


def volume_loader(key: str = "image", dtype: Any = np.float32) -> LoadImage:
    """MONAI ``LoadImage`` that also reads DICOM series folders and ``.npz``/``.h5`` files (their array ``key``).

    Args:
        key: the array name inside ``.npz``/``.h5`` files (``image`` or ``label``).
        dtype: the loaded array's data type.

    Returns:
        a ``LoadImage(image_only=True)`` with :func:`mgrad.data.readers.image_readers` registered.
    """
    loader = LoadImage(image_only=True, dtype=dtype)
    for reader in image_readers(key):  # tried before MONAI's own, each on the files of its suffix
        loader.register(reader)
    return loader


def load_file(loader: LoadImage, path: Any) -> torch.Tensor:
    """``loader(path)``; a missing, unreadable or corrupt file raises :class:`DataError` naming it.

    Args:
        loader: e.g. :func:`volume_loader`.
        path: the file.

    Returns:
        the loaded MetaTensor, as ``loader`` returns it.

    Raises:
        DataError: ``"<path>: file not found"`` or ``"<path>: cannot be read: <reason>"``.
    """
    if isinstance(path, (str, Path)) and not Path(path).exists():
        raise DataError(f"{path}: file not found")
    try:
        return loader(path)
    except Exception as e:
        raise read_error(path, e) from e


def load_ras(path: Any, key: str = "image") -> MetaTensor:
    """One file, channel-first and reoriented to RAS, as the volume pipelines load it.

    Args:
        path: the file (NIfTI, or ``.npz``/``.h5`` with an array named ``key``).
        key: ``image`` or ``label``.

    Returns:
        a MetaTensor ``(C, H, W, D)`` with its RAS affine.

    Raises:
        DataError: naming the file, where it is missing or unreadable.
    """
    x = load_file(volume_loader(key), path)
    return Orientation(axcodes="RAS", labels=None)(EnsureChannelFirst()(x))


def affine_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest element-wise difference of two MetaTensors' affines (``inf`` for different shapes; ``0`` where either
    is a plain tensor). Two files are on one grid where their shapes agree and this is at most :data:`GRID_ATOL`."""
    if not (isinstance(a, MetaTensor) and isinstance(b, MetaTensor)):
        return 0.0
    x, y = a.affine.numpy(), b.affine.numpy()
    return float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")


def relabel(label: np.ndarray, label_map: Mapping[int, int] | None) -> np.ndarray:
    """``label`` with each raw value mapped by ``label_map`` ({raw: class}; unlisted values -> 0); unchanged if None."""
    if label_map is None:
        return label
    label = label.astype(np.int64)
    lut = np.zeros(max(int(label.max()), *(int(r) for r in label_map)) + 1, dtype=np.int64)
    for raw, target in label_map.items():
        lut[int(raw)] = int(target)
    return lut[label]


class Pair(NamedTuple):
    """A prediction and its label on one RAS grid: ``(H, W, D)`` int64 arrays, the label's spacing in mm, the
    image ``(H, W, D)`` float32 where it was loaded (else ``None``), and whether the label's file stores its spacing
    (``.h5`` and ``.npz`` files do not: their spacing reads as 1 and their distances are in voxels)."""

    pred: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]
    image: np.ndarray | None
    spacing_known: bool = True


def load_pair(pred: Any, label: Any, label_map: Mapping[int, int] | None = None, image: Any = None) -> Pair:
    """Load a prediction with its label (and optionally the image) on one RAS grid, checking that the grids agree.

    A label stored in another orientation than its prediction still lines up; the spacing comes from the label.

    Args:
        pred: the prediction file (class indices).
        label: the label file (class indices, or raw values mapped by ``label_map``).
        label_map: ``{raw label value: class}`` applied to the label.
        image: the image file, loaded too where given (for figures).

    Returns:
        a :class:`Pair`.

    Raises:
        DataError: naming the file that is missing or unreadable, or both files where their grids differ.

    Example:
        >>> pair = load_pair("case_000_seg.nii.gz", "labelsTr/case_000.nii.gz")  # doctest: +SKIP
        >>> pair.pred.shape == pair.label.shape
        True
    """
    p, g = load_ras(pred, "label"), load_ras(label, "label")
    if p.shape[1:] != g.shape[1:]:
        raise DataError(
            f"prediction {pred} shape {tuple(p.shape[1:])} differs from label {label} shape {tuple(g.shape[1:])}"
        )
    if affine_difference(p, g) > GRID_ATOL:
        raise DataError(
            f"prediction {pred} affine differs from label {label} affine by {affine_difference(p, g):.4g} mm"
        )
    spacing = tuple(float(s) for s in np.linalg.norm(g.affine.numpy()[:3, :3], axis=0))
    label_array = relabel(g.numpy()[0].round().astype(np.int64), label_map)
    image_array = load_ras(image, "image").numpy()[0] if image is not None else None
    pred_array = p.numpy()[0].round().astype(np.int64)
    return Pair(pred_array, label_array, spacing, image_array, carries_spacing(label))
