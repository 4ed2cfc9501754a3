"""Errors raised for bad input data; each message starts with the file (or folder) it concerns."""

from typing import Any

NO_READER = "cannot find a suitable reader"  # MONAI LoadImage's message for a file no reader takes


class DataError(ValueError):
    """A data file, folder or datalist that cannot be used, with the path and the problem in the message."""


class MissingSplitError(DataError):
    """The dataset layout has no such split (e.g. no ``test.list``); not a broken case."""


def read_error(path: Any, error: BaseException) -> DataError:
    """``DataError("<path>: cannot be read: <reason>")`` for ``error`` raised while loading ``path``."""
    text = str(error).strip()
    reason = f"{type(error).__name__}: {(text.splitlines() or [''])[0][:300]}"
    if NO_READER in text:
        reason = "no reader for this file type (NIfTI and MONAI's other formats, .npz, .h5, DICOM series folders)"
    return DataError(f"{path}: cannot be read: {reason}")
