"""``python -m mgrad check-data PATH [--dataset NAME]``: validate every case before training."""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mgrad.data.datalist import SPLITS, decathlon_datalist, get_datalist
from mgrad.data.errors import DataError, MissingSplitError
from mgrad.data.presets import dataset_info
from mgrad.data.validate import case_problems
from mgrad.errors import root_cause


def _datalists(path: Path, dataset: Optional[str]) -> Tuple[Dict[str, List[dict]], List[str]]:
    """Every available split's items, and the datalist-level problems (missing folder, empty list, ...)."""
    lists: Dict[str, List[dict]] = {}
    problems: List[str] = []
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
            problems.append(str(e))
    if not lists and not problems:
        problems.append(f"{path}: no training, validation or test datalist")
    return lists, problems


def _load(key: str, path: str):
    """``(tensor, None)`` or ``(None, problem)`` for one file, loaded channel-first in RAS as the pipelines do."""
    from mgrad.transforms.io import load_ras  # mgrad.transforms imports mgrad.data

    try:
        return load_ras(key)({key: path})[key], None
    except Exception as e:
        return None, str(root_cause(e))


def check_data(path: str, dataset: Optional[str] = None, num_classes: Optional[int] = None) -> dict:
    """Validate every case of a decathlon-style ``dataset.json`` (or folder holding one), or of a dataset folder of
    layout ``dataset`` (see :func:`mgrad.data.get_datalist`).

    Checks each file is present and readable, finite, a 3D volume (2D slice files are accepted as training items of
    slice datasets), label values integer and in ``0..num_classes-1`` (or in the dataset's label map), and image/label
    shapes and affines equal. Prints one line per problem file and a summary; raises ``SystemExit(1)`` if any case is
    broken, else returns ``{"cases": n, "broken": 0, "splits": {...}}``.
    """
    root = Path(path)
    if dataset is None and root.is_dir() and not (root / "dataset.json").is_file():
        print(f"{root}: no dataset.json here; pass --dataset NAME for a dataset folder")
        raise SystemExit(1)
    info = dataset_info(dataset or "decathlon", str(root))
    num_classes = num_classes or info["num_classes"]
    lists, problems = _datalists(root, dataset) if root.exists() else ({}, [f"{root}: not found"])
    seen, broken = set(), set()
    for split, items in lists.items():
        require_volume = not (split == "training" and info["training_slices"])
        for item in items:
            key = (item.get("image"), item.get("label"))
            if key in seen:
                continue
            seen.add(key)
            loaded, case = {}, {}
            for k in ("image", "label"):
                if k in item:
                    loaded[k], problem = _load(k, item[k])
                    if problem:
                        case[str(item[k])] = [
                            problem.split(": ", 1)[1] if problem.startswith(str(item[k])) else problem
                        ]
            found = case_problems(
                loaded.get("image"),
                loaded.get("label"),
                num_classes if info["label_map"] is None else None,
                info["label_map"],
                require_volume,
            )
            for f, p in {**found, **case}.items():
                problems.append(f"{f}: {'; '.join(p)}")
            if found or case:
                broken.add(key)
    for line in problems:
        print(line)
    splits = {s: len(items) for s, items in lists.items()}
    print(f"check-data {root}: {len(seen)} cases in {splits}, {len(broken)} broken, {len(problems)} problem lines")
    if problems:
        raise SystemExit(1)
    return {"cases": len(seen), "broken": 0, "splits": splits}
