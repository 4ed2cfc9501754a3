"""Connected-component post-processing per class, and choosing it per class from validation results.

Slice-by-slice 2D predictions of 3D organs leave stray islands that inflate HD95. Per foreground class a rule keeps
only the largest connected component (MONAI's ``KeepLargestConnectedComponent``), removes components below a
volume in mm^3 (MONAI's ``RemoveSmallObjects`` by measure, as documented), or leaves the class as it is; removed
voxels become background. :func:`choose_rules` picks each class's rule as nnU-Net does: the candidate with the best
mean Dice over the validation cases, and none unless it improves on leaving the class alone.
"""

import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent, MapTransform
from skimage import measure

from mgrad.writers import atomic_path, write_json

__all__ = [
    "NO_RULE",
    "PostProcessd",
    "apply_rules",
    "choose_rules",
    "choose_rules_for_files",
    "load_rules",
    "postprocess_file",
    "rule_name",
    "save_rules",
]

NO_RULE: dict[str, Any] = {"largest": False, "min_size_mm3": 0.0}
# candidate island sizes, as fractions of the class's smallest non-empty ground-truth volume in the validation set
MIN_SIZE_FRACTIONS = (0.02, 0.1, 0.3)


def _keep(mask: torch.Tensor, rule: Mapping[str, Any], spacing: Sequence[float]) -> torch.Tensor:
    """The part of a binary ``(1, H, W, D)`` mask that ``rule`` keeps (full connectivity)."""
    if rule.get("largest"):
        mask = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)(mask.to(torch.uint8)) > 0
    min_size = float(rule.get("min_size_mm3") or 0.0)
    if min_size > 0:
        # components under ceil(mm^3 / voxel volume) voxels go: MONAI's documented rule, computed here because
        # scikit-image 0.26 turned the threshold MONAI passes it inclusive (and deprecated), so MONAI's result now
        # depends on the version installed and it warns (a warning filter is process-wide, not thread-safe)
        min_voxels = np.ceil(min_size / (float(np.prod(spacing)) or 1.0))
        components = measure.label(mask[0].numpy(force=True), connectivity=mask.ndim - 1)
        kept = np.bincount(components.ravel()) >= min_voxels
        kept[0] = False
        mask = torch.as_tensor(kept[components])[None]
    return mask


def apply_rules(
    labels: torch.Tensor, rules: Mapping[int, Mapping[str, Any]], spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """``labels`` ``(1, H, W, D)`` with each class's rule applied (removed voxels become background, 0).

    Args:
        labels: class indices, channel first.
        rules: class index -> ``{"largest": bool, "min_size_mm3": float}``; classes without a rule are kept.
        spacing: voxel size in mm along H, W, D (for ``min_size_mm3``).

    Returns:
        the post-processed labels, same shape and dtype (a new tensor).

    Example:
        >>> labels = torch.tensor([1, 1, 0, 1]).view(1, 4, 1, 1)
        >>> apply_rules(labels, {1: {"largest": True}}).flatten().tolist()
        [1, 1, 0, 0]
    """
    out = torch.as_tensor(labels).clone()
    for c, rule in rules.items():
        mask = out == int(c)
        if (rule.get("largest") or rule.get("min_size_mm3")) and mask.any():
            out[mask & ~_keep(mask, rule, spacing)] = 0
    return out


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int((a & b).sum()) / total


def _candidates(min_volumes_mm3: float) -> list[dict[str, Any]]:
    sizes = [round(f * min_volumes_mm3, 1) for f in MIN_SIZE_FRACTIONS] if np.isfinite(min_volumes_mm3) else []
    return [dict(NO_RULE), {"largest": True, "min_size_mm3": 0.0}] + [
        {"largest": False, "min_size_mm3": s} for s in sizes if s > 0
    ]


def rule_name(rule: Mapping[str, Any]) -> str:
    """A short name of a rule: ``largest``, ``min_size_mm3=N`` or ``none``."""
    if rule.get("largest"):
        return "largest"
    return f"min_size_mm3={rule['min_size_mm3']:g}" if rule.get("min_size_mm3") else "none"


def choose_rules(
    cases: Iterable[tuple[Any, Any, Sequence[float]]], num_classes: int
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, float]]]:
    """Each foreground class's post-processing rule, chosen on validation cases by mean Dice.

    Candidates per class: none, keep the largest component, remove components below 2%, 10% or 30% of the
    class's smallest ground-truth volume among the cases. The best candidate by mean Dice over the cases (a case
    where class and prediction are both empty does not count) is chosen if it beats none; ties keep none.

    Args:
        cases: ``(prediction, label, spacing)`` per case: class-index arrays of one shape ``(H, W, D)`` and the
            voxel size in mm.
        num_classes: number of classes, background included.

    Returns:
        ``(rules, dice)``: class -> chosen rule (``{"largest": bool, "min_size_mm3": float}``), and class ->
        candidate name -> mean Dice.

    Example:
        >>> rules, dice = choose_rules([(pred, label, (1.0, 1.0, 2.5))], num_classes=4)  # doctest: +SKIP
    """
    data = [(torch.as_tensor(np.asarray(p))[None], torch.as_tensor(np.asarray(g))[None], s) for p, g, s in cases]
    if not data:
        raise ValueError("choose_rules needs at least one validation case")
    rules: dict[int, dict[str, Any]] = {}
    dice: dict[int, dict[str, float]] = {}
    for c in range(1, num_classes):
        volumes = [int((g == c).sum()) * float(np.prod(s)) for _, g, s in data]
        smallest = min((v for v in volumes if v > 0), default=float("inf"))
        scores = {}
        for rule in _candidates(smallest):
            values = [_dice(_keep(p == c, rule, s) if (p == c).any() else p == c, g == c) for p, g, s in data]
            values = [v for v in values if not np.isnan(v)]
            scores[rule_name(rule)] = (float(np.mean(values)) if values else float("nan"), rule)
        base = scores["none"][0]
        best_name = max(scores, key=lambda k: -np.inf if np.isnan(scores[k][0]) else scores[k][0])
        rules[c] = scores[best_name][1] if scores[best_name][0] > base else dict(NO_RULE)
        dice[c] = {name: value for name, (value, _) in scores.items()}
    return rules, dice


def save_rules(path: str | os.PathLike, rules: Mapping[int, Mapping[str, Any]], **extra: Any) -> None:
    """Write ``rules`` (and ``extra`` entries, e.g. the Dice of each candidate) as JSON, atomically."""
    write_json(path, {"rules": {str(c): dict(r) for c, r in rules.items()}, **extra})


def load_rules(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The rules written by :func:`save_rules`; a missing or malformed file raises an error naming it."""
    try:
        rules = json.loads(Path(path).read_text())["rules"]
        return {
            int(c): {"largest": bool(r["largest"]), "min_size_mm3": float(r["min_size_mm3"])} for c, r in rules.items()
        }
    except FileNotFoundError:
        raise FileNotFoundError(
            f"post-processing rules {path} not found: `mgrad evaluate` writes them (postprocessing.json)"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"post-processing rules {path} are not valid: {type(e).__name__}: {e}") from e


class PostProcessd(MapTransform):
    """Applies per-class connected-component rules (:func:`apply_rules`) to label maps ``(1, H, W, D)``.

    Args:
        keys: the label maps to post-process.
        rules: class -> rule, or the path of a JSON file written by ``mgrad evaluate`` (:func:`save_rules`).

    The voxel size comes from each MetaTensor's ``pixdim`` (1 mm otherwise).

    Example:
        >>> PostProcessd("pred", "eval/postprocessing.json")  # doctest: +SKIP
    """

    def __init__(self, keys: Any, rules: str | os.PathLike | Mapping[int, Mapping[str, Any]]) -> None:
        super().__init__(keys)
        self.rules = load_rules(rules) if isinstance(rules, (str, os.PathLike)) else dict(rules)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = d[key]
            spacing = tuple(float(s) for s in labels.pixdim) if hasattr(labels, "pixdim") else (1.0, 1.0, 1.0)
            out = apply_rules(labels.as_tensor() if hasattr(labels, "as_tensor") else labels, self.rules, spacing)
            d[key] = labels.clone().copy_(out) if hasattr(labels, "meta") else out
        return d


def choose_rules_for_files(
    pairs: Iterable[tuple[str, str]], num_classes: int, label_map: Mapping[int, int] | None = None
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, float]]]:
    """:func:`choose_rules` on prediction and label files (any format the data layer reads), compared on one RAS
    grid with the label's voxel size; ``label_map`` relabels the labels as the dataset's preset does.

    Args:
        pairs: ``(prediction file, label file)`` per validation case.
        num_classes: number of classes, background included.
        label_map: raw label -> class index, or ``None``.

    Returns:
        ``(rules, dice)`` as :func:`choose_rules`.

    Example:
        >>> rules, dice = choose_rules_for_files([("pred/a_seg.nii.gz", "labels/a.nii.gz")], 4)  # doctest: +SKIP
    """
    from mgrad.data.loading import load_pair

    cases = []
    for pred_file, label_file in pairs:
        pair = load_pair(pred_file, label_file, label_map)
        cases.append((pair.pred.astype(np.uint8), pair.label.astype(np.uint8), pair.spacing))
    return choose_rules(cases, num_classes)


def postprocess_file(
    pred_file: str | os.PathLike, out_file: str | os.PathLike, rules: Mapping[int, Mapping[str, Any]]
) -> None:
    """Apply ``rules`` to the NIfTI label map ``pred_file`` and write it, with the same header, to ``out_file``."""
    image = nib.load(str(pred_file))
    labels = torch.as_tensor(np.asarray(image.dataobj).astype(np.uint8))[None]
    out = apply_rules(labels, rules, tuple(float(z) for z in image.header.get_zooms()[:3]))
    with atomic_path(out_file) as tmp:
        nib.save(nib.Nifti1Image(out.numpy()[0], image.affine, image.header), str(tmp))
