"""``volume_datalist``: the volumes to segment, from a folder of files or a datalist."""

import json
from pathlib import Path

from mgrad.data.errors import DataError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".h5", ".hdf5", ".npz", ".nrrd", ".mha", ".mhd")


def volume_datalist(path: str | Path) -> list[dict[str, str]]:
    """``[{"image": file}, ...]`` for every volume file in folder ``path`` (sorted), or the items of a datalist.

    A datalist is a decathlon-style ``.json`` file, or a folder holding one as ``dataset.json``; its ``test`` list
    (or else ``validation``, else ``training``) is used, whose entries are file names or ``{"image": ...}`` dicts,
    relative to the json's folder. Raises :class:`DataError` naming ``path`` where it is missing or holds no volume.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of volumes")
    if path.is_dir() and (path / "dataset.json").is_file():
        path = path / "dataset.json"
    if path.is_dir():
        files = sorted(str(f) for f in path.iterdir() if f.is_file() and f.name.lower().endswith(VOLUME_SUFFIXES))
        items = [{"image": f} for f in files]
    else:
        try:
            lists = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable datalist ({e})") from e
        key = next((k for k in ("test", "validation", "training") if lists.get(k)), None)
        entries = lists[key] if key else []
        items = [dict(e) if isinstance(e, dict) else {"image": e} for e in entries]
        for item in items:
            for k in ("image", "label"):
                if k in item and not Path(item[k]).is_absolute():
                    item[k] = str(path.parent / item[k])
    if not items:
        raise DataError(f"{path}: no volumes found (expected {', '.join(VOLUME_SUFFIXES)} files or a datalist)")
    return items
