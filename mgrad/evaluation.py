"""``python -m mgrad evaluate``: per-organ 3D metrics of predictions, or of a dataset split segmented by the bundle.

Two ways in:

- ``--pred_dir P --label_dir L --num_classes N``: score NIfTI predictions against NIfTI labels
  (:func:`mgrad.metrics.evaluate`);
- ``--dataset NAME --dataset_dir DIR [--split validation]``: segment the split's volumes with the bundle's trained
  model (``configs/inference.json`` + ``configs/evaluate.json``), write the predictions in each volume's original
  geometry, then score them against the split's labels in any format the data layer reads (NIfTI, h5, npz).

Both print a table laid out like the paper's Table 1 and write ``metrics.csv`` and ``metrics.json`` (with
``mean_dice``).
"""

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from mgrad import metrics
from mgrad.transforms.io import load_ras
from mgrad.visualize import overlay_figure

__all__ = ["evaluate", "score_datalist", "prediction_path"]


def prediction_path(image: str, pred_dir: str, postfix: str = "seg") -> Path:
    """Where ``SaveImaged(output_postfix=postfix, separate_folder=False)`` writes the prediction of ``image``."""
    name = Path(image).name
    stem = name[: -len(".gz")] if name.endswith(".gz") else name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return Path(pred_dir) / f"{stem}_{postfix}.nii.gz"


def _case_name(item: Mapping[str, Any]) -> str:
    return str(item.get("case") or prediction_path(item["image"], ".").name[: -len("_seg.nii.gz")])


def _load(item: Mapping[str, Any], pred_file: Path, label_map: Optional[Mapping[int, int]]):
    """Image, prediction and label as arrays on one RAS grid, and the label's voxel spacing; grids must agree."""
    label_file = item["label"]
    data = load_ras(["image", "pred", "label"])({"image": item["image"], "pred": str(pred_file), "label": label_file})
    image, pred, label = data["image"], data["pred"], data["label"]
    if pred.shape != label.shape:
        raise ValueError(
            f"prediction {pred_file} {list(pred.shape[1:])} and label {label_file} {list(label.shape[1:])} "
            "differ in shape"
        )
    if not np.allclose(pred.affine.numpy(), label.affine.numpy(), atol=1e-3):
        raise ValueError(f"prediction {pred_file} and label {label_file} have different affines")
    spacing = tuple(float(s) for s in np.linalg.norm(label.affine.numpy()[:3, :3], axis=0))
    label = metrics.relabel(label.numpy()[0].round().astype(np.int64), label_map)
    return image.numpy()[0], pred.numpy()[0].round().astype(np.int64), label, spacing


def _on_gpu(volume: np.ndarray):
    """On CUDA the metrics run on GPU tensors (mgrad.metrics picks its GPU path for them); else the array."""
    return torch.as_tensor(volume, device="cuda") if torch.cuda.is_available() else volume


def score_datalist(
    items: Sequence[Mapping[str, Any]],
    pred_dir: str,
    num_classes: int,
    class_names: Optional[Sequence[str]] = None,
    label_map: Optional[Mapping[int, int]] = None,
    protocol: str = "default",
    output_dir: Optional[str] = None,
    postfix: str = "seg",
    figures: bool = True,
) -> Dict[str, Any]:
    """Score the predictions in ``pred_dir`` of the datalist ``items`` (``{"image", "label"}``) against their labels.

    Both are compared on one RAS grid (a label stored in another orientation than its image still lines up); the
    spacing comes from the label; on CUDA the metrics run on the GPU. A case whose prediction is missing or does not
    fit is reported as an error; the others are still scored. With ``output_dir`` the report is written there, and
    with ``figures`` a PNG per case (slices with ground truth and prediction overlaid) under ``output_dir/figures``.
    Prints the table; returns the summary.
    """
    names = list(class_names) if class_names else [str(c) for c in range(1, num_classes)]
    cases: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    for item in items:
        case = _case_name(item)
        pred_file = prediction_path(item["image"], pred_dir, postfix)
        try:
            if not pred_file.is_file():
                raise FileNotFoundError(f"no prediction {pred_file} for {item['image']}")
            image, pred, label, spacing = _load(item, pred_file, label_map)
            cases[case] = metrics.case_metrics(_on_gpu(pred), _on_gpu(label), num_classes, spacing, protocol)
            if output_dir is not None and figures:
                path = Path(output_dir) / "figures" / f"{case}.png"
                overlay_figure(image, label, pred, path, names, title=f"{case}: ground truth and prediction")
        except Exception as e:  # noqa: BLE001 - one bad case is reported, the others are scored
            errors[case] = str(e)
    summary = metrics.summarize(cases, class_names, protocol, errors)
    if output_dir is not None:
        metrics.write_report(summary, output_dir)
    print(metrics.format_table(summary))
    return summary


def evaluate(
    pred_dir: Optional[str] = None,
    label_dir: Optional[str] = None,
    num_classes: Optional[int] = None,
    class_names: Optional[Any] = None,
    protocol: str = "default",
    output_dir: Optional[str] = None,
    dataset: Optional[str] = None,
    dataset_dir: Optional[str] = None,
    split: str = "validation",
    bundle_root: Optional[str] = None,
    configs: Sequence[str] = (),
    **overrides: Any,
) -> Dict[str, Any]:
    """Per-case, per-organ Dice, HD95, IoU and ASD in 3D; see the module docstring for the two ways in.

    ``protocol="transunet"`` reproduces the published evaluation rules (HD95 in voxels, the 1/0 rule for empty
    cases); the default reports empty cases explicitly. Other options (``--preset``, ``--ckpt_path``,
    ``--device``) go to the bundle; ``--configs NAME`` layers more of its configs on top (e.g. ``baseline_basicunet``).
    Exits with status 1 if any case failed.
    """
    if dataset is None:
        if pred_dir is None or label_dir is None or num_classes is None:
            raise SystemExit("evaluate needs --pred_dir, --label_dir and --num_classes, or --dataset and --dataset_dir")
        summary = metrics.evaluate(pred_dir, label_dir, num_classes, class_names, protocol, output_dir)
    else:
        summary = _evaluate_dataset(dataset, dataset_dir, split, protocol, output_dir, bundle_root, configs, overrides)
    if summary.get("errors"):
        raise SystemExit(1)
    return summary


def _evaluate_dataset(
    dataset: str,
    dataset_dir: Optional[str],
    split: str,
    protocol: str,
    output_dir: Optional[str],
    bundle_root: Optional[str],
    configs: Sequence[str],
    overrides: Dict[str, Any],
) -> Dict[str, Any]:
    from mgrad.bundle import config_names, default_bundle_root, run_config
    from mgrad.engines.evaluator import CaseFailures

    root = Path(bundle_root) if bundle_root else default_bundle_root()
    out = Path(output_dir) if output_dir else root / "eval"
    try:
        run_config(
            ["inference", "evaluate", *config_names(configs)],
            root,
            dataset_name=dataset,
            dataset_dir=dataset_dir,
            split=split,
            output_dir=str(out),
            protocol=protocol,
            **overrides,
        )
    except CaseFailures as e:  # the failed cases are reported again by the scoring, beside the others
        print(e)
    return json.loads((out / "metrics.json").read_text())
