"""MONAI image readers for TransUNet ``.npz`` slices and SSL4MIS/TransUNet ``.h5`` files.

Both return arrays with the slice axis last, as NIfTI loads: a 2D slice ``(H, W)`` becomes ``(H, W, 1)`` and a
volume stored ``(Z, H, W)`` becomes ``(H, W, Z)``. These files carry no geometry, so the affine is the identity.
Each reader reads one named array (``key``), so use one reader per dict key. :class:`FileTypeReader` joins them with
MONAI's own readers, each file read by the reader of its type: the one reader a ``LoadImaged(reader=...)`` needs.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from monai.data import ImageReader
from monai.data.utils import is_supported_format
from monai.transforms import LoadImage
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from mgrad.data.dicom import DicomSeriesReader

PathLike = str | Path


def to_volume(array: np.ndarray, name: str = "") -> np.ndarray:
    """``(H, W)`` -> ``(H, W, 1)``; ``(Z, H, W)`` -> ``(H, W, Z)``; anything else is an error."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3:
        return np.ascontiguousarray(np.moveaxis(array, 0, -1))
    raise ValueError(f"{name}: expected a 2D (H, W) or 3D (Z, H, W) array, got shape {tuple(array.shape)}")


class _ArrayFileReader(ImageReader):
    """Shared part: one array per file, named ``key``, with the slice axis moved last."""

    suffixes: Sequence[str] = ()

    def __init__(self, key: str = "image") -> None:
        super().__init__()
        self.key = key

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return is_supported_format(filename, self.suffixes)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> np.ndarray | list:
        arrays = [to_volume(self._read_array(str(name)), str(name)) for name in ensure_tuple(data)]
        return arrays if len(arrays) > 1 else arrays[0]

    def _read_array(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def get_data(self, img: np.ndarray | list) -> tuple:
        arrays = [img] if isinstance(img, np.ndarray) else list(img)
        meta = {
            MetaKeys.AFFINE: np.eye(4),
            MetaKeys.ORIGINAL_AFFINE: np.eye(4),
            MetaKeys.SPATIAL_SHAPE: np.asarray(arrays[0].shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(arrays) == 1 else 0,
        }
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), meta


class H5Reader(_ArrayFileReader):
    """Reads dataset ``key`` of an HDF5 file (``.h5``, ``.hdf5``; SSL4MIS ACDC, TransUNet ``test_vol_h5``)."""

    suffixes = ("h5", "hdf5")

    def _read_array(self, name: str) -> np.ndarray:
        with h5py.File(name, "r") as f:
            if self.key not in f:
                raise KeyError(f"{name}: no dataset '{self.key}' (has {sorted(f.keys())})")
            return np.asarray(f[self.key][()])


class NpzReader(_ArrayFileReader):
    """Reads array ``key`` of a ``.npz`` file (TransUNet ``train_npz`` slices)."""

    suffixes = ("npz",)

    def _read_array(self, name: str) -> np.ndarray:
        with np.load(name, allow_pickle=False) as f:
            if self.key not in f.files:
                raise KeyError(f"{name}: no array '{self.key}' (has {sorted(f.files)})")
            return np.asarray(f[self.key])


def carries_spacing(path: PathLike) -> bool:
    """Whether the file stores its voxel size: not so for the array files (``.npz``, ``.h5``), read with an identity
    affine, whose distances are therefore in voxels.

    Example:
        >>> carries_spacing("patient002_frame01.h5"), carries_spacing("case.nii.gz")
        (False, True)
    """
    return not is_supported_format(str(path), (*NpzReader.suffixes, *H5Reader.suffixes))


def image_readers(key: str = "image") -> list[ImageReader]:
    """mgrad's readers to register with MONAI's ``LoadImage``/``LoadImaged`` (``register``) for the dict key ``key``:
    DICOM series folders (:class:`~mgrad.data.dicom.DicomSeriesReader`) and the array ``key`` of ``.npz``/``.h5``
    files. MONAI's own readers (NIfTI, NRRD, ...) stay registered and read what these cannot; the loader picks each
    file's reader by its suffix. For ``reader=...``, where the loader would try every reader on every file, use
    :class:`FileTypeReader`.

    Example:
        >>> loader = LoadImaged("image", image_only=True)
        >>> for reader in image_readers("image"):
        ...     loader.register(reader)
        >>> loader({"image": "case.h5"})["image"].shape   # (H, W, Z)
    """
    return [DicomSeriesReader(), NpzReader(key), H5Reader(key)]


class FileTypeReader(ImageReader):
    """One MONAI ``ImageReader`` for every format mgrad reads: each file goes to the reader of its type, mgrad's
    (:func:`image_readers`: a DICOM series folder, ``.npz``, ``.h5``) before MONAI's own (NIfTI, NRRD, ...), which
    are tried in the order MONAI's ``LoadImage`` tries them by itself.

    For ``LoadImaged(reader=...)``, the form a bundle config and MONAI Label or MONAI Deploy (which recognise
    ``LoadImaged``) need. Given a list of readers, MONAI's loader tries each on every file, whatever its type, and logs
    each failure at INFO level: three lines for every NIfTI file with :func:`image_readers`. Given this reader, it
    reads every supported file at the first try. A file of a supported type that its reader cannot read (a
    ``.npz`` without the ``key`` array, a damaged NIfTI) fails with that reader's error: MONAI's loader, which offers
    a file that a designated reader could not read to all its other readers in turn, would otherwise have MONAI's
    ``NumpyReader`` read the other arrays of such a ``.npz`` as the image. A file of a type no reader takes is left
    to MONAI's loader (where ITK is installed, its reader claims every such type).

    Args:
        key: the array read from ``.npz``/``.h5`` files (``image`` or ``label``).

    Example:
        >>> LoadImaged("image", reader=FileTypeReader("image"), image_only=True)({"image": "case.nii.gz"})
    """

    def __init__(self, key: str = "image") -> None:
        super().__init__()
        # MONAI's readers as its loader builds them (those whose packages are installed), in the order it tries them
        self.readers: list[ImageReader] = image_readers(key)[::-1] + LoadImage().readers[::-1]

    def _reader_of(self, filename: Sequence[PathLike] | PathLike) -> ImageReader | None:
        return next((reader for reader in self.readers if reader.verify_suffix(filename)), None)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return self._reader_of(filename) is not None

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> tuple[ImageReader | None, Any]:
        """The reader of ``data``'s type and what it read, or ``(None, error)`` where that reader failed (raised by
        :meth:`get_data`, so that MONAI's loader does not offer the file to readers of other types); ``ValueError``
        where no reader takes that type."""
        reader = self._reader_of(data)
        if reader is None:
            raise ValueError(f"{ensure_tuple(data)[0]}: no reader for this type of file (installed: {self.readers})")
        try:
            return reader, reader.read(data, **kwargs)
        except Exception as error:  # noqa: BLE001 - raised again by get_data
            return None, error

    def get_data(self, img: tuple[ImageReader | None, Any]) -> tuple:
        reader, image = img
        if reader is None:
            raise image
        return reader.get_data(image)
