"""``volume_datalist``: the volumes to segment, from a folder of files or a datalist."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.data.utils import create_file_basename

from mgrad.data.dicom import is_dicom_series
from mgrad.data.errors import DataError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".h5", ".hdf5", ".npz", ".nrrd", ".mha", ".mhd")


def is_volume_file(path: Path) -> bool:
    """True for a file whose name ends with one of :data:`VOLUME_SUFFIXES` (any case)."""
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_datalist(path: str | Path) -> list[dict[str, str]]:
    """``[{"image": file}, ...]`` for every volume file in folder ``path`` (sorted), or the items of a datalist.

    A folder holding a DICOM series is one volume; so is each DICOM series subfolder of ``path``, and so is a single
    volume file given as ``path``.

    A datalist is a decathlon-style ``.json`` file, or a folder holding one as ``dataset.json``; its ``test`` list
    (or else ``validation``, else ``training``) is used, whose entries are file names or ``{"image": ...}`` dicts,
    relative to the json's folder. Raises :class:`DataError` naming ``path`` where it is missing, holds no volume, or
    holds volumes whose predictions would overwrite each other (see :func:`check_unique_names`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of volumes")
    if path.is_dir() and (path / "dataset.json").is_file():
        path = path / "dataset.json"
    if is_dicom_series(path) or is_volume_file(path):
        items = [{"image": str(path)}]
    elif path.is_dir():
        files = sorted(str(f) for f in path.iterdir() if is_volume_file(f) or is_dicom_series(f))
        items = [{"image": f} for f in files]
    else:
        try:
            lists = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(
                f"{path}: neither a volume file ({', '.join(VOLUME_SUFFIXES)}) nor a readable datalist .json ({e})"
            ) from e
        if not isinstance(lists, dict):
            raise DataError(
                f"{path}: a datalist is a JSON object with a 'test', 'validation' or 'training' list of volumes, "
                f"got a JSON {type(lists).__name__}"
            )
        key = next((k for k in ("test", "validation", "training") if lists.get(k)), None)
        entries = lists[key] if key else []
        items = [dict(e) if isinstance(e, dict) else {"image": e} for e in entries]
        for item in items:
            for k in ("image", "label"):
                if k in item and not Path(item[k]).is_absolute():
                    item[k] = str(path.parent / item[k])
    if not items:
        raise DataError(
            f"{path}: no volumes found (expected {', '.join(VOLUME_SUFFIXES)} files, DICOM series or a datalist)"
        )
    check_unique_names(items, path)
    return items


def check_unique_names(items: Sequence[Mapping[str, str]], source: str | Path) -> None:
    """Raise :class:`DataError` naming ``source`` and the inputs where two items' images share a file name without
    its extension (``p1/ct.nii.gz`` and ``p2/ct.nii.gz``, ``case.nii`` and ``case.nii.gz``): the predictions are
    named after it (MONAI's ``FolderLayout``), so they would overwrite each other in one output folder.

    Example:
        >>> check_unique_names([{"image": "a/ct.nii.gz"}, {"image": "b/ct.nii.gz"}], "list.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mgrad.data.errors.DataError: list.json: a/ct.nii.gz and b/ct.nii.gz would write the same prediction ('ct'); ...
    """
    images: dict[str, list[str]] = {}
    for item in items:
        name = create_file_basename("", str(item["image"]), "", separate_folder=False, makedirs=False)
        images.setdefault(name, []).append(str(item["image"]))
    clashes = [
        f"{' and '.join(files)} would write the same prediction ('{name}')"
        for name, files in images.items()
        if len(files) > 1
    ]
    if clashes:
        raise DataError(f"{source}: {'; '.join(clashes)}; give each volume its own file name")
