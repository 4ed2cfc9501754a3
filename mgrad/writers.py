"""Writing files so that a reader never sees half of one: a temporary name in the same folder, then a rename; and
reading the JSON files back, with an error that names the file."""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai.data import NibabelWriter, image_writer

__all__ = [
    "PROBABILITY_SCALE",
    "atomic_path",
    "check_output_folder",
    "read_json",
    "write_json",
    "AtomicNibabelWriter",
    "AtomicProbabilityWriter",
]

# probabilities are stored as uint16 steps of 1/PROBABILITY_SCALE (NIfTI has no float16)
PROBABILITY_SCALE = 65535


@contextmanager
def atomic_path(path: str | os.PathLike, keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it to ``path`` if the block succeeds.

    On failure the temporary file is removed and an existing ``path`` is left as it was. With ``keep_name`` the
    temporary file has ``path``'s own name, in a temporary folder beside it: for writers that record the file's name
    inside the file (``torch.jit.save`` names the archive's top folder after it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = None
    if keep_name:
        folder = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        tmp = os.path.join(folder, path.name)
    else:
        suffix = "".join(path.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
        os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if folder is not None:
            os.rmdir(folder)


def check_output_folder(path: str | os.PathLike) -> None:
    """Raise ``NotADirectoryError`` where ``path``, a folder that outputs are to be written into, is an existing file
    (or has one among its parents): checked before a run, since each output would otherwise fail only once computed.

    Example:
        >>> check_output_folder("bundle/eval")  # a folder, or one that does not exist yet: nothing happens
    """
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"output folder {path}: {blocking} is a file, not a folder; give another output_dir")


def write_json(path: str | os.PathLike, value: Any, indent: int = 2) -> None:
    """Write ``value`` as JSON to ``path`` through :func:`atomic_path` (a reader sees the old file or the new one)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=indent) + "\n")


_REQUIRED = object()


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError, missing: Any = _REQUIRED) -> Any:
    """The JSON value in the file ``path``.

    Args:
        path: the file.
        error: the exception raised, with ``path`` and the problem in its message, for a file that is not there or
            is not readable JSON (a ``ValueError`` subclass such as :class:`mgrad.data.errors.DataError`).
        missing: returned where there is no file ``path`` (by default that is an ``error`` too).

    Returns:
        the parsed value (``dict``, ``list``, ...), or ``missing``.

    Raises:
        error: ``"<path>: file not found"`` or ``"<path>: cannot be read: <exception>: <reason>"``.

    Example:
        >>> read_json("nowhere.json", missing=None) is None
        True
    """
    path = Path(path)
    if not path.is_file():
        if missing is not _REQUIRED:
            return missing
        raise error(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise error(f"{path}: cannot be read: {type(e).__name__}: {e}") from e


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_path` (use as ``SaveImaged(writer=...)``); with
    ``verbose`` it logs the file's own name, as MONAI's writers do, not the temporary one."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs) -> None:
        if verbose:
            image_writer.logger.info(f"writing: {filename}")
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)


class AtomicProbabilityWriter(AtomicNibabelWriter):
    """:class:`AtomicNibabelWriter` for probabilities quantised to ``uint16`` steps of ``1 / PROBABILITY_SCALE``.

    The integers are stored as they are with the NIfTI scaling slope ``1 / PROBABILITY_SCALE``, so readers that apply
    the scaling (``nibabel``'s ``get_fdata``, MONAI's ``LoadImage``, ITK) get probabilities in [0, 1] at two bytes a
    voxel. Use as ``SaveImaged(writer=AtomicProbabilityWriter, output_dtype=numpy.uint16)`` on ``uint16`` data.
    """

    @classmethod
    def create_backend_obj(cls, data_array, affine=None, dtype=None, **kwargs):
        image = super().create_backend_obj(data_array, affine=affine, dtype=dtype, **kwargs)
        image.header.set_slope_inter(1.0 / PROBABILITY_SCALE, 0.0)
        return image
