"""Reports of scored cases: per-class and overall means, the CSV/JSON files and the paper-style text table."""

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mgrad.metrics.case import METRICS
from mgrad.writers import atomic_path, write_json


def summarize(
    cases: Mapping[str, Mapping[int, Mapping[str, Any]]],
    class_names: Sequence[str] | None = None,
    protocol: str = "default",
    errors: Mapping[str, str] | None = None,
    distance_unit: str | None = None,
) -> dict[str, Any]:
    """Means per class (NaN skipped) and overall (mean of the class means), with empty-case counts.

    Args:
        cases: ``{case name: its mgrad.metrics.case_metrics result}``.
        class_names: names of classes ``1, 2, ...`` (default ``class_1, ...``).
        protocol: the protocol the cases were scored with.
        errors: ``{case: message}`` of cases that could not be scored.
        distance_unit: the unit of ``hd95`` and ``asd``: ``"mm"`` or ``"vox"`` (scored without a spacing); default
            ``"vox"`` for the ``transunet`` protocol, else ``"mm"``.

    Returns:
        ``{"protocol", "distance_unit", "class_names", "num_cases", "mean_dice", "mean": {metric: value},
        "per_class": {name: {metric: mean, n_cases, n_gt_empty, n_pred_empty, n_both_empty}}, "cases": {case:
        {name: record}}, "errors"}``.

    Example:
        >>> summarize({"a": {1: {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "hd95_vox": 0.0, "asd": 0.0, "asd_vox": 0.0,
        ...                      "gt_empty": False, "pred_empty": False}}})["mean_dice"]
        1.0
    """
    classes = sorted({c for result in cases.values() for c in result})
    if not cases and class_names is not None:
        classes = list(range(1, len(class_names) + 1))
    names = list(class_names) if class_names is not None else [f"class_{c}" for c in classes]
    if len(names) != len(classes):
        raise ValueError(f"{len(names)} class names for {len(classes)} classes {classes}: {names}")
    per_class = {}
    for c, name in zip(classes, names):
        records = [result[c] for result in cases.values() if c in result]
        per_class[name] = {m: _mean([r[m] for r in records]) for m in METRICS}
        per_class[name].update(
            n_cases=len(records),
            n_gt_empty=sum(bool(r["gt_empty"]) for r in records),
            n_pred_empty=sum(bool(r["pred_empty"]) for r in records),
            n_both_empty=sum(bool(r["gt_empty"] and r["pred_empty"]) for r in records),
        )
    mean = {m: _mean([per_class[name][m] for name in names]) for m in METRICS}
    if distance_unit is None:
        distance_unit = _protocol_unit(protocol)
    if distance_unit not in ("mm", "vox"):
        raise ValueError(f"distance_unit must be 'mm' or 'vox', got {distance_unit!r}")
    return {
        "protocol": protocol,
        "distance_unit": distance_unit,
        "class_names": names,
        "num_cases": len(cases),
        "mean_dice": mean["dice"],
        "mean": mean,
        "per_class": per_class,
        "cases": {
            case: {name: dict(result[c]) for c, name in zip(classes, names) if c in result}
            for case, result in cases.items()
        },
        "errors": dict(errors or {}),
    }


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def write_report(summary: Mapping[str, Any], out_dir: str | os.PathLike, stem: str = "metrics") -> tuple[Path, Path]:
    """Write ``STEM.csv`` (one row per case and class, then mean rows, then error rows) and ``STEM.json``
    (the summary, NaN written as null), each atomically.

    Args:
        summary: a :func:`summarize` result.
        out_dir: the folder (created if missing).
        stem: the file names' stem.

    Returns:
        ``(csv path, json path)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["case", "class", *METRICS, "gt_empty", "pred_empty", "error"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for case, result in summary["cases"].items():
        for name, record in result.items():
            writer.writerow({"case": case, "class": name, **{k: record[k] for k in fields[2:-1]}})
    for name, record in [*summary["per_class"].items(), ("all", summary["mean"])]:
        writer.writerow({"case": "mean", "class": name, **{m: record[m] for m in METRICS}})
    for case, message in summary["errors"].items():
        writer.writerow({"case": case, "error": message})
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(text.getvalue(), newline="")
    write_json(json_path, _json_safe(summary))
    return csv_path, json_path


def _json_safe(value: Any) -> Any:
    """NaN -> None (strict JSON), numpy scalars -> Python ones, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a text table laid out like the paper's Table 1: one column per organ, plus the mean.

    Args:
        summary: a :func:`summarize` result.

    Returns:
        the table, its protocol and case count, the empty-case counts and one ``ERROR case: message`` line per
        case that could not be scored.
    """
    names = summary["class_names"]
    voxels = distance_unit(summary) == "vox"
    rows = [("Dice %", "dice", 100), ("HD95 (vox)" if voxels else "HD95 (mm)", "hd95", 1)]
    rows += [] if voxels else [("HD95 (vox)", "hd95_vox", 1)]
    rows += [("IoU %", "iou", 100), ("ASD (vox)" if voxels else "ASD (mm)", "asd", 1)]
    columns = [("Mean", summary["mean"])] + [(name, summary["per_class"][name]) for name in names]
    widths = [max(len(title), 7) for title, _ in columns]
    head = max(len(r[0]) for r in rows)
    lines = [" ".join([" " * head] + [title.rjust(w) for (title, _), w in zip(columns, widths)])]
    for label, key, factor in rows:
        cells = [f"{values[key] * factor:.2f}".rjust(w) for (_, values), w in zip(columns, widths)]
        lines.append(" ".join([label.ljust(head)] + cells))
    lines.append(f"protocol: {summary['protocol']}, cases: {summary['num_cases']}")
    if summary["protocol"] != "transunet":
        for kind in ("gt_empty", "pred_empty", "both_empty"):
            counts = {name: summary["per_class"][name][f"n_{kind}"] for name in names}
            if any(counts.values()):
                lines.append(
                    f"cases with {kind.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                )
    lines += [f"ERROR {case}: {message}" for case, message in summary["errors"].items()]
    return "\n".join(lines)


def distance_unit(summary: Mapping[str, Any]) -> str:
    """The unit of a summary's HD95 and ASD, ``"mm"`` or ``"vox"`` (a summary written before it was recorded: by its
    protocol)."""
    return summary.get("distance_unit") or _protocol_unit(summary["protocol"])


def _protocol_unit(protocol: str) -> str:
    """The unit of HD95 and ASD where no other is known: voxels under the ``transunet`` protocol, else mm."""
    return "vox" if protocol == "transunet" else "mm"
