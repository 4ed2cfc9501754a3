"""Per-case metrics: Dice and IoU from one confusion matrix, HD95 and ASD from one surface extraction per class,
and the values of the two protocols for a class missing from the prediction and/or the ground truth."""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mgrad.metrics import surface
from mgrad.metrics.surface import Volume

PROTOCOLS = ("default", "transunet")
METRICS = ("dice", "iou", "hd95", "hd95_vox", "asd", "asd_vox")
_DISTANCES = ("hd95", "hd95_vox", "asd", "asd_vox")


def case_metrics(
    pred: Volume,
    label: Volume,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    protocol: str = "default",
) -> dict[int, dict[str, Any]]:
    """Metrics of one case for classes ``1 .. num_classes - 1`` (``num_classes`` counts the background).

    CUDA tensors are scored on their GPU, anything else with numpy/scipy.

    Args:
        pred: integer label volume ``(H, W, D)`` or ``(1, H, W, D)`` (numpy or torch).
        label: integer label volume of the same shape.
        num_classes: number of classes, background included.
        spacing: voxel size per axis (or one for all) in mm: ``hd95``/``asd`` in mm; ``None``: in voxels.
        protocol: ``"default"`` or ``"transunet"`` (see :mod:`mgrad.metrics`).

    Returns:
        ``{class: {dice, iou, hd95, hd95_vox, asd, asd_vox, gt_empty, pred_empty}}``; ``hd95_vox``/``asd_vox``
        are always in voxels.

    Raises:
        ValueError: for other shapes, labels outside ``[0, num_classes)``, a bad spacing or protocol.

    Example:
        >>> label = np.zeros((8, 8, 4), int); label[2:6, 2:6, 1:3] = 1
        >>> case_metrics(label, label, 2)[1]["dice"]
        1.0
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    on_gpu = any(isinstance(x, torch.Tensor) and x.is_cuda for x in (pred, label))
    pred, label = _prepare(pred, num_classes, on_gpu), _prepare(label, num_classes, on_gpu)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
    spacing = None if protocol == "transunet" else _spacing(spacing, pred.ndim)
    confusion = surface.confusion(pred, label, num_classes)  # [pred class, gt class]
    boxes = surface.boxes(pred, label, num_classes)
    results = {}
    for c in range(1, num_classes):
        n_pred, n_gt, inter = int(confusion[c].sum()), int(confusion[:, c].sum()), int(confusion[c, c])
        record: dict[str, Any] = {"gt_empty": n_gt == 0, "pred_empty": n_pred == 0}
        if n_pred and n_gt:
            record["dice"] = 2.0 * inter / float(n_pred + n_gt)
            record["iou"] = float(inter) / float(n_pred + n_gt - inter)
            record.update(surface.distance_metrics(pred[boxes[c]] == c, label[boxes[c]] == c, spacing))
        else:
            record.update(_empty_values(protocol, n_pred > 0, n_gt > 0))
        results[c] = {k: record[k] for k in (*METRICS, "gt_empty", "pred_empty")}
    return results


def _prepare(x: Volume, num_classes: int, on_gpu: bool) -> Volume:
    """Integer label volume on the computing side (CUDA tensor or numpy), leading singleton channel dropped."""
    if isinstance(x, torch.Tensor):
        x = x.detach().as_subclass(torch.Tensor)  # a plain tensor, without MetaTensor bookkeeping
        x = x.cuda() if on_gpu else x.cpu().numpy()
    else:
        x = np.asarray(x)
        if on_gpu:
            x = torch.as_tensor(x, device="cuda")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    floating = x.is_floating_point() if on_gpu else x.dtype.kind == "f"
    if math.prod(x.shape) and (
        bool(x.min() < 0) or bool(x.max() >= num_classes) or (floating and bool((x != x.round()).any()))
    ):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got values in [{x.min()}, {x.max()}]")
    if on_gpu:
        return x.long()
    return x.astype(np.uint8 if num_classes <= 256 else np.int32, copy=False)


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)))
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return spacing


def _empty_values(protocol: str, has_pred: bool, has_gt: bool) -> dict[str, float]:
    """Metric values for a class missing from the prediction and/or the ground truth (module docstring table)."""
    if protocol == "transunet":
        overlap, distance = (1.0, 0.0) if has_pred else (0.0, 0.0)
    else:
        overlap, distance = (math.nan if not (has_pred or has_gt) else 0.0), math.nan
    return {"dice": overlap, "iou": overlap, **dict.fromkeys(_DISTANCES, distance)}
