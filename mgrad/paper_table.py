"""The paper's published rows (Tables 1 and 2) and the result table that puts measured rows beside them."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mgrad.data.classes import ACDC_CLASSES, SYNAPSE_CLASSES
from mgrad.metrics import distance_unit

__all__ = ["PAPER_ROWS", "PROTOCOL_TITLES", "measured_row", "format_markdown"]

# MGRAD-UNet's published numbers (percent; HD95 in voxels); test protocol: TransUNet's, best of ~300 test evaluations
PAPER_ROWS: dict[str, dict[str, Any]] = {
    "synapse": {
        "model": "MGRAD-UNet",
        "source": "paper, Table 1",
        "protocol": "transunet",
        "mean_dice": 83.33,
        "hd95": 16.67,
        "mean_iou": 74.68,
        "dice": dict(zip(SYNAPSE_CLASSES, (89.31, 76.41, 85.22, 84.94, 94.53, 61.17, 93.39, 81.66))),
        "epochs": 300,
        "hardware": "GPU NVIDIA RTX 4090 (24 GB)",
        "selection": "best of about 300 test-set evaluations (the released trainers' rule)",
    },
    "acdc": {
        "model": "MGRAD-UNet",
        "source": "paper, Table 2",
        "protocol": "transunet",
        "mean_dice": 92.13,
        "hd95": None,
        "mean_iou": None,
        "dice": dict(zip(ACDC_CLASSES, (90.42, 90.00, 95.98))),
        "epochs": 300,
        "hardware": "GPU NVIDIA RTX 4090 (24 GB)",
        "selection": "best of about 300 test-set evaluations (the released trainers' rule)",
    },
}

PROTOCOL_TITLES = {"transunet": "published", "default": "MONAI"}
UNIT_NAMES = {"vox": "voxels", "mm": "mm"}


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * value, 2)


def measured_row(model: str, summary: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A table row from an evaluation summary (``mgrad.metrics.summarize``): Dice and IoU in percent, HD95 in the
    summary's ``distance_unit`` (voxels for ``transunet`` and for files without a spacing, else mm); ``extra``
    (epochs, times, hardware) is added."""
    hd95 = summary["mean"]["hd95"]
    return {
        "model": model,
        "source": "measured",
        "protocol": summary["protocol"],
        "distance_unit": distance_unit(summary),
        "mean_dice": _percent(summary["mean_dice"]),
        "hd95": None if hd95 is None or math.isnan(hd95) else round(hd95, 2),
        "mean_iou": _percent(summary["mean"]["iou"]),
        "dice": {name: _percent(values["dice"]) for name, values in summary["per_class"].items()},
        "test_cases": summary["num_cases"],
        **extra,
    }


def _cell(value: Any, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2f}{suffix}" if isinstance(value, float) else f"{value}{suffix}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_markdown(
    title: str, class_names: Sequence[str], rows: Sequence[Mapping[str, Any]], notes: Sequence[str]
) -> str:
    """A markdown table (one row per model, source and test protocol; Dice in percent) followed by ``notes``."""
    head = ["Model", "Source", "Test protocol", "Mean Dice %", "HD95", "mIoU %", *class_names]
    head += ["Epochs", "Training time", "Hardware"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        unit = distance_unit(row)
        protocol = f"{PROTOCOL_TITLES[row['protocol']]} (HD95 in {UNIT_NAMES[unit]})"
        cells = [row["model"], row["source"], protocol, _cell(row["mean_dice"])]
        cells += [_cell(row["hd95"], f" {unit}"), _cell(row.get("mean_iou"))]
        cells += [_cell(row["dice"].get(name)) for name in class_names]
        cells += [_cell(row.get("epochs")), _duration(row.get("train_seconds")), row.get("hardware") or "–"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n"
