"""Per-organ 3D segmentation metrics (Dice, IoU, HD95, ASD) and their reports.

Values follow ``medpy.metric.binary`` ``dc``, ``jc``, ``hd95`` and ``assd``: a surface is a mask minus its binary
erosion with the connectivity-1 cross (voxels on the array edge count as surface); HD95 is the 95th percentile
(``numpy.percentile``, linear) of both directed surface-to-surface distance sets put together, ASD their mean.

Speed: Dice and IoU of all classes come from one confusion matrix; surfaces are extracted inside each class's
bounding box of prediction and ground truth (everything outside is background for both masks, so the erosion is
unchanged) and extracted once for both HD95 and ASD; the nearest surface voxel is found with a k-d tree (CPU) or
an exact pairwise search on the GPU (CUDA tensors), never with a full-volume distance transform.

Protocols for a class missing from the prediction and/or the ground truth of a case:

==========================  ====================================  =====================================
case                        ``"default"``                         ``"transunet"`` (published rules)
==========================  ====================================  =====================================
both non-empty              computed                              computed, distances in voxels
GT empty, prediction not    Dice 0, IoU 0, HD95/ASD NaN           Dice 1, IoU 1, HD95 0, ASD 0
prediction empty, GT not    Dice 0, IoU 0, HD95/ASD NaN           all 0
both empty                  all NaN                               all 0
==========================  ====================================  =====================================

Means skip NaN and the report counts the empty cases per class. ``"transunet"`` ignores the spacing (TransUNet's
``test_single_volume`` calls medpy without it); with no NaN, a mean over classes of per-class means equals its
mean over classes, then over cases.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from mgrad.writers import atomic_path

PROTOCOLS = ("default", "transunet")
METRICS = ("dice", "iou", "hd95", "hd95_vox", "asd", "asd_vox")
_DISTANCES = ("hd95", "hd95_vox", "asd", "asd_vox")
_CROSS = {}  # ndim -> connectivity-1 structuring element
_PRED_SUFFIXES = ("_seg", "_pred", "_prediction")
_LABEL_SUFFIXES = ("_gt", "_label", "_labels", "_seg")

Volume = Union[np.ndarray, torch.Tensor]


def case_metrics(
    pred: Volume,
    label: Volume,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    protocol: str = "default",
) -> dict[int, dict[str, Any]]:
    """Metrics of one case for classes ``1 .. num_classes - 1`` (``num_classes`` counts the background).

    ``pred`` and ``label`` are integer label volumes of the same shape (numpy or torch, a leading channel of 1 is
    dropped). ``spacing`` (per axis, in mm) gives ``hd95``/``asd`` in mm; ``hd95_vox``/``asd_vox`` are always in
    voxels. Returns ``{class: {dice, iou, hd95, hd95_vox, asd, asd_vox, gt_empty, pred_empty}}``.
    CUDA tensors are scored on their GPU, anything else with numpy/scipy.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    on_gpu = any(isinstance(x, torch.Tensor) and x.is_cuda for x in (pred, label))
    pred, label = _prepare(pred, num_classes, on_gpu), _prepare(label, num_classes, on_gpu)
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
    spacing = None if protocol == "transunet" else _spacing(spacing, pred.ndim)
    confusion = _confusion(pred, label, num_classes)  # [pred class, gt class]
    boxes = _boxes(pred, label, num_classes)
    results = {}
    for c in range(1, num_classes):
        n_pred, n_gt, inter = int(confusion[c].sum()), int(confusion[:, c].sum()), int(confusion[c, c])
        record: dict[str, Any] = {"gt_empty": n_gt == 0, "pred_empty": n_pred == 0}
        if n_pred and n_gt:
            record["dice"] = 2.0 * inter / float(n_pred + n_gt)
            record["iou"] = float(inter) / float(n_pred + n_gt - inter)
            record.update(_distance_metrics(pred[boxes[c]] == c, label[boxes[c]] == c, spacing))
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


def _confusion(pred: Volume, label: Volume, num_classes: int) -> np.ndarray:
    """(C, C) voxel counts indexed [pred class, label class], from one bincount of pred * C + label."""
    n = num_classes
    if isinstance(pred, torch.Tensor):
        return torch.bincount((pred * n + label).reshape(-1), minlength=n * n).reshape(n, n).cpu().numpy()
    p, g = np.ravel(pred), np.ravel(label)
    counts = np.zeros(n * n, dtype=np.int64)
    chunk = 1 << 22  # bounds the int64 temporaries to 32 MiB each
    for start in range(0, p.size, chunk):
        counts += np.bincount(p[start : start + chunk].astype(np.intp) * n + g[start : start + chunk], minlength=n * n)
    return counts.reshape(n, n)


def _boxes(pred: Volume, label: Volume, num_classes: int) -> dict[int, tuple[slice, ...]]:
    """Per class, the bounding box of prediction and label together (classes absent from both are left out)."""
    if isinstance(pred, torch.Tensor):
        boxes = {}
        for c in range(1, num_classes):
            mask = (pred == c) | (label == c)
            extent = [
                mask.any(dim=tuple(d for d in range(mask.ndim) if d != axis)).nonzero() for axis in range(mask.ndim)
            ]
            if len(extent[0]):
                boxes[c] = tuple(slice(int(e[0]), int(e[-1]) + 1) for e in extent)
        return boxes
    found = zip(ndimage.find_objects(pred, num_classes - 1), ndimage.find_objects(label, num_classes - 1))
    return {
        c: tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(p, g)) if p and g else (p or g)
        for c, (p, g) in enumerate(found, start=1)
        if p or g
    }


def _surface_points(mask: Volume) -> Volume:
    """Coordinates (N, ndim) of the mask voxels that its connectivity-1 erosion removes (medpy's border)."""
    if isinstance(mask, np.ndarray):
        if mask.ndim not in _CROSS:
            _CROSS[mask.ndim] = ndimage.generate_binary_structure(mask.ndim, 1)
        return np.argwhere(mask & ~ndimage.binary_erosion(mask, structure=_CROSS[mask.ndim]))
    padded = torch.zeros([s + 2 for s in mask.shape], dtype=torch.bool, device=mask.device)  # outside is background
    core = tuple(slice(1, s + 1) for s in mask.shape)
    padded[core] = mask
    eroded = mask.clone()
    for axis in range(mask.ndim):
        for start in (0, 2):
            shifted = list(core)
            shifted[axis] = slice(start, start + mask.shape[axis])
            eroded &= padded[tuple(shifted)]
    return (mask & ~eroded).nonzero()


def _nearest(points: Volume, targets: Volume) -> np.ndarray:
    """Euclidean distance from each point to its nearest target (float64 coordinates)."""
    if isinstance(points, np.ndarray):
        return cKDTree(targets).query(points, workers=-1)[0]
    step = max(1, (1 << 26) // len(targets))  # pairs per block: 512 MiB of float64
    return (
        torch.cat(
            [
                torch.cdist(points[i : i + step], targets, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
                for i in range(0, len(points), step)
            ]
        )
        .cpu()
        .numpy()
    )


def _distance_metrics(pred: Volume, label: Volume, spacing: tuple[float, ...] | None) -> dict[str, float]:
    """HD95 and ASD (medpy ``hd95``/``assd``) in voxels and, with ``spacing``, in mm, from one surface extraction."""
    p, g = (_surface_points(mask) for mask in (pred, label))
    p, g = (x.double() if isinstance(x, torch.Tensor) else x.astype(np.float64) for x in (p, g))
    out = dict(zip(("hd95_vox", "asd_vox"), _hd95_asd(p, g)))
    if spacing is None:
        out["hd95"], out["asd"] = out["hd95_vox"], out["asd_vox"]
    else:
        scale = p.new_tensor(spacing) if isinstance(p, torch.Tensor) else np.asarray(spacing)
        out["hd95"], out["asd"] = _hd95_asd(p * scale, g * scale)
    return out


def _hd95_asd(p: Volume, g: Volume) -> tuple[float, float]:
    """95th percentile and mean of both directed surface distance sets together."""
    distances = np.concatenate([_nearest(p, g), _nearest(g, p)])
    return float(np.percentile(distances, 95)), float(distances.mean())


def _empty_values(protocol: str, has_pred: bool, has_gt: bool) -> dict[str, float]:
    """Metric values for a class missing from the prediction and/or the ground truth (module docstring table)."""
    if protocol == "transunet":
        overlap, distance = (1.0, 0.0) if has_pred else (0.0, 0.0)
    else:
        overlap, distance = (math.nan if not (has_pred or has_gt) else 0.0), math.nan
    return {"dice": overlap, "iou": overlap, **dict.fromkeys(_DISTANCES, distance)}


def summarize(
    cases: Mapping[str, Mapping[int, Mapping[str, Any]]],
    class_names: Sequence[str] | None = None,
    protocol: str = "default",
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Means per class (NaN skipped) and overall (mean of the class means), with empty-case counts.

    ``cases`` maps a case name to its :func:`case_metrics` result; ``class_names`` name classes ``1, 2, ...``
    (default ``class_1, ...``); ``errors`` maps cases that could not be scored to a message.
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
    return {
        "protocol": protocol,
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
    (the summary, NaN written as null), each atomically. Returns both paths."""
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
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
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
    """The summary as a text table laid out like the paper's Table 1: one column per organ, plus the mean."""
    names = summary["class_names"]
    voxels = summary["protocol"] == "transunet"
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
    if not voxels:
        for kind in ("gt_empty", "pred_empty", "both_empty"):
            counts = {name: summary["per_class"][name][f"n_{kind}"] for name in names}
            if any(counts.values()):
                lines.append(
                    f"cases with {kind.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                )
    lines += [f"ERROR {case}: {message}" for case, message in summary["errors"].items()]
    return "\n".join(lines)


def evaluate_folders(
    preds: str | os.PathLike | Sequence[str | os.PathLike],
    labels: str | os.PathLike | Sequence[str | os.PathLike],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    protocol: str = "default",
    out_dir: str | os.PathLike | None = None,
    label_map: Mapping[int, int] | None = None,
    stem: str = "metrics",
) -> dict[str, Any]:
    """Score NIfTI predictions against NIfTI labels (folders, searched recursively, or lists of files).

    Files pair up by case name: the file name without ``.nii``/``.nii.gz`` and without a trailing ``_seg``,
    ``_pred``, ``_prediction`` (predictions) or ``_gt``, ``_label``, ``_labels``, ``_seg`` (labels); where several
    files share a name, the suffixed one wins (so ACDC's ``X.nii.gz`` image beside ``X_gt.nii.gz`` is skipped).
    The spacing comes from the label header. ``label_map`` ({raw value: class}, others -> 0) relabels the labels
    only. A case that cannot be read, paired or matched in shape and affine is reported as an error (in the summary,
    the report and :func:`format_table`); the others are still scored. With ``out_dir`` the CSV/JSON report is
    written there. Returns the summary (:func:`summarize`, plus ``files``: the pair scored for each case).
    """
    pred_files, pred_errors = _index(preds, _PRED_SUFFIXES)
    label_files, errors = _index(labels, _LABEL_SUFFIXES)
    errors.update(pred_errors)
    errors.update(
        {case: f"no label for prediction {pred_files[case]}" for case in pred_files.keys() - label_files.keys()}
    )
    errors.update(
        {case: f"no prediction for label {label_files[case]}" for case in label_files.keys() - pred_files.keys()}
    )
    cases, files = {}, {}
    for case in sorted((pred_files.keys() & label_files.keys()) - errors.keys()):
        files[case] = {"pred": str(pred_files[case]), "label": str(label_files[case])}
        try:
            pred, label, spacing = _load_pair(pred_files[case], label_files[case], label_map)
            cases[case] = case_metrics(pred, label, num_classes, spacing, protocol)
        except Exception as e:  # one bad case must not stop the others: it is reported instead
            errors[case] = f"{type(e).__name__}: {e}"
    if class_names is not None and len(class_names) == num_classes:
        class_names = list(class_names)[1:]  # the background's name was given too
    summary = summarize(cases, class_names, protocol, dict(sorted(errors.items())))
    summary["files"] = files
    if out_dir is not None:
        write_report(summary, out_dir, stem)
    return summary


def _index(source: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Sequence[str]) -> tuple[dict, dict]:
    """{case name: file} for a folder (recursive) or a list of NIfTI files, and {case name: error} for ambiguities."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise FileNotFoundError(f"not a folder: {source}")
        paths = sorted(p for p in Path(source).rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    else:
        paths = [Path(p) for p in source]
    groups: dict[str, list[tuple[bool, Path]]] = {}
    for path in paths:
        name = path.name.removesuffix(".gz").removesuffix(".nii")
        suffix = next((s for s in suffixes if name.endswith(s)), "")
        groups.setdefault(name.removesuffix(suffix) if suffix else name, []).append((bool(suffix), path))
    files, errors = {}, {}
    for case, group in groups.items():
        candidates = [path for suffixed, path in group if suffixed] or [path for _, path in group]
        if len(candidates) == 1:
            files[case] = candidates[0]
        else:
            errors[case] = "several files for one case: " + ", ".join(map(str, candidates))
    return files, errors


def relabel(label: np.ndarray, label_map: Mapping[int, int] | None) -> np.ndarray:
    """``label`` with each raw value mapped by ``label_map`` ({raw: class}; unlisted values -> 0); unchanged if None."""
    if label_map is None:
        return label
    label = label.astype(np.int64)
    lut = np.zeros(max(int(label.max()), *(int(r) for r in label_map)) + 1, dtype=np.int64)
    for raw, target in label_map.items():
        lut[int(raw)] = int(target)
    return lut[label]


def _load_pair(
    pred_path: Path, label_path: Path, label_map: Mapping[int, int] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Prediction and label arrays and the label's spacing, after checking that their grids agree."""
    import nibabel as nib

    images = []
    for path in (pred_path, label_path):
        try:
            image = nib.load(str(path))
            images.append((image, np.asanyarray(image.dataobj)))
        except Exception as e:
            raise ValueError(f"cannot read {path}: {e}") from e
    (pred_image, pred), (label_image, label) = images
    pred, label = (x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x for x in (pred, label))
    if pred.shape != label.shape or not np.allclose(pred_image.affine, label_image.affine, rtol=1e-4, atol=1e-3):
        raise ValueError(
            f"prediction {pred_path} (shape {pred.shape}) does not match label {label_path} (shape {label.shape}) "
            f"in shape or affine:\n{pred_image.affine}\nvs\n{label_image.affine}"
        )
    return pred, relabel(label, label_map), tuple(float(z) for z in label_image.header.get_zooms()[: label.ndim])


def evaluate(
    pred_dir: str | Sequence[str],
    label_dir: str | Sequence[str],
    num_classes: int,
    class_names: str | Sequence[str] | None = None,
    protocol: str = "default",
    output_dir: str | None = None,
    label_map: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Command ``python -m mgrad evaluate``: score NIfTI predictions, print the table, write CSV and JSON.

    Args:
        pred_dir: folder of predictions (or a list of files).
        label_dir: folder of ground-truth labels (or a list of files), paired with the predictions by case name.
        num_classes: number of classes including the background (Synapse 9, ACDC 4).
        class_names: names of classes 1..N-1 (a list, or one comma-separated string); a first background name
            may be included.
        protocol: "default" (empty cases as NaN, with counts) or "transunet" (the published 1/0 rules, voxels).
        output_dir: where metrics.csv and metrics.json go (default: ``pred_dir`` when it is a folder).
        label_map: {raw label value: class} applied to the labels, e.g. BTCV ids to the 8 Synapse organs.
    """
    if isinstance(class_names, str):
        class_names = [name.strip() for name in class_names.split(",")]
    if output_dir is None and isinstance(pred_dir, (str, os.PathLike)):
        output_dir = pred_dir
    summary = evaluate_folders(pred_dir, label_dir, num_classes, class_names, protocol, output_dir, label_map)
    print(format_table(summary))
    if output_dir is not None:
        print(f"report: {Path(output_dir) / 'metrics.csv'}, {Path(output_dir) / 'metrics.json'}")
    return summary
