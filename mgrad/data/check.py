"""Checking a dataset before training: every case of every split, every problem named with the file to fix."""

from pathlib import Path
from typing import Any

from mgrad.data.datalist import SPLITS, decathlon_datalist
from mgrad.data.datasets import dataset_info, get_datalist
from mgrad.data.errors import DataError, MissingSplitError
from mgrad.data.loading import load_ras
from mgrad.data.validate import case_problems
from mgrad.errors import root_cause

__all__ = ["check_data"]


def _datalists(path: Path, dataset: str | None) -> tuple[dict[str, list[dict]], list[str]]:
    """Every available split's items, and the datalist-level problems (missing folder, empty list, ...)."""
    lists: dict[str, list[dict]] = {}
    problems: list[str] = []
    for split in SPLITS:
        try:
            if dataset is None or (dataset == "decathlon" and path.suffix == ".json"):
                lists[split] = decathlon_datalist(str(path), split)
                if not lists[split]:
                    raise DataError(f"{path}: the '{split}' datalist is empty")
            else:
                lists[split] = get_datalist(dataset, str(path), split)
        except MissingSplitError:
            continue
        except DataError as e:
            if str(e) not in problems:  # a folder-level problem is the same for every split
                problems.append(str(e))
    if not lists and not problems:
        problems.append(f"{path}: no training, validation or test datalist")
    return lists, problems


def _load(key: str, path: str) -> tuple[Any, str | None]:
    """``(tensor, None)`` or ``(None, problem without the file name)`` for one file, loaded as the pipelines do."""
    try:
        return load_ras(path, key), None
    except Exception as e:  # noqa: BLE001 - every unreadable file becomes a reported problem
        problem = str(root_cause(e))
        return None, problem.split(": ", 1)[1] if problem.startswith(f"{path}: ") else problem


def check_data(
    path: str, dataset: str | None = None, num_classes: int | None = None, in_channels: int | None = 1
) -> dict[str, Any]:
    """Validate every case of a decathlon-style ``dataset.json`` (or folder holding one), or of a dataset folder of
    layout ``dataset`` (see :func:`mgrad.data.get_datalist`).

    Checks each file is present and readable, finite, a 3D volume of ``in_channels`` channels (2D slice files are
    accepted as training items of slice datasets), label values integer and in ``0..num_classes-1`` (or in the
    dataset's label map), and image/label shapes and affines equal. Each problem line starts with the file to fix; a
    problem of the pair (shape, affine) starts with the label and names the image too.

    Args:
        path: a ``dataset.json``, a folder holding one, or a dataset folder (with ``dataset``).
        dataset: the dataset layout (a key of :data:`mgrad.data.DATASETS`); ``None``: decathlon ``dataset.json``.
        num_classes: the number of classes, background included (default: the dataset's).
        in_channels: the image channels the network takes (``None``: any).

    Returns:
        ``{"path", "cases": number checked, "broken": number of broken cases, "splits": {split: items},
        "problems": [one line per problem file or datalist]}``; the data are fit for training where ``problems``
        is empty.

    Example:
        >>> report = check_data("/data/Task09_Spleen/dataset.json")  # doctest: +SKIP
        >>> report["problems"]
        []
    """
    root = Path(path)
    report: dict[str, Any] = {"path": str(root), "cases": 0, "broken": 0, "splits": {}, "problems": []}
    if dataset is None and root.is_dir() and not (root / "dataset.json").is_file():
        report["problems"].append(f"{root}: no dataset.json here; pass --dataset NAME for a dataset folder")
        return report
    try:
        info = dataset_info(dataset or "decathlon", str(root))
    except DataError as e:
        report["problems"].append(str(e))
        return report
    num_classes = num_classes or info.num_classes
    lists, problems = _datalists(root, dataset) if root.exists() else ({}, [f"{root}: not found"])
    seen, broken = set(), set()
    for split, items in lists.items():
        require_volume = not (split == "training" and info.training_slices)
        for item in items:
            key = (item.get("image"), item.get("label"))
            if key in seen:
                continue
            seen.add(key)
            loaded, unreadable = {}, {}
            for k in ("image", "label"):
                if k in item:
                    loaded[k], problem = _load(k, item[k])
                    if problem:
                        unreadable[str(item[k])] = [problem]
            found = case_problems(
                loaded.get("image"), loaded.get("label"), num_classes, info.label_map, require_volume, in_channels
            )
            for file, lines in {**found, **unreadable}.items():
                problems.append(f"{file}: {'; '.join(lines)}")
            if found or unreadable:
                broken.add(key)
    report.update(
        cases=len(seen), broken=len(broken), splits={s: len(items) for s, items in lists.items()}, problems=problems
    )
    return report
