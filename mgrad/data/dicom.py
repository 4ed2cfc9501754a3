"""DICOM series in: a MONAI image reader for a folder holding one DICOM series, decoded by SimpleITK (GDCM, which
also reads compressed transfer syntaxes such as JPEG 2000)."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

__all__ = ["DicomSeriesReader", "is_dicom_file", "is_dicom_series"]

sitk, has_sitk = optional_import("SimpleITK")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_series(path: str | os.PathLike) -> bool:
    """True for a folder holding at least one DICOM file (checked on its first few files)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.is_file())[:8]
    return any(is_dicom_file(p) for p in files)


class DicomSeriesReader(ImageReader):
    """Reads a folder holding one DICOM series into an ``(X, Y, Z)`` array with its RAS affine.

    The slices are ordered by their position (GDCM's series sorting) and the affine comes from Image Position,
    Image Orientation and Pixel Spacing (DICOM's LPS, flipped to RAS as NIfTI files and MONAI's other readers use),
    so predictions saved with it lie in the series' geometry. Register it with MONAI's loader:
    ``LoadImaged("image", reader=DicomSeriesReader())``. Needs ``SimpleITK`` (``pip install mgrad[dicom]``).

    Example:
        >>> image = LoadImage(reader=DicomSeriesReader(), image_only=True)("/data/CT_series")
        >>> image.shape, image.affine
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = ensure_tuple(filename)
        return len(names) == 1 and is_dicom_series(names[0])

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        if not has_sitk:
            raise ImportError("reading DICOM series needs SimpleITK: pip install SimpleITK (or mgrad[dicom])")
        folder = str(ensure_tuple(data)[0])
        if not Path(folder).is_dir():  # LoadImage tries every reader on a file no other reader could read
            raise ValueError(f"{folder}: not a folder holding a DICOM series")
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(folder)
        if len(series) != 1:
            found = "no DICOM series" if not series else f"{len(series)} DICOM series ({', '.join(series)})"
            raise ValueError(f"{folder}: holds {found}; expected a folder with exactly one series")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, series[0]))
        return reader.Execute()

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"expected a single-channel 3D DICOM series, got {img.GetDimension()}D with "
                f"{img.GetNumberOfComponentsPerPixel()} components per pixel"
            )
        array = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))  # (Z, Y, X) -> (X, Y, Z)
        direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(img.GetSpacing())
        affine[:3, 3] = img.GetOrigin()
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        }
        return array, meta
