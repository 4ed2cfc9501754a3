"""``python -m mgrad evaluate``: per-organ 3D metrics of predictions, or of a dataset split segmented by the bundle.

Two ways in, one scoring loop (:func:`score_pairs`) and one loader (:func:`mgrad.data.loading.load_pair`):

- folders: ``pred_dir`` and ``label_dir`` hold NIfTI files paired by case name (:func:`evaluate_folders`);
- a dataset split: the bundle (``configs/inference.json`` + ``configs/evaluate.json``) segments the split's volumes
  and writes each prediction where its ``prediction_layout`` (MONAI's ``FolderLayout``) says; the
  :class:`SegmentationReport` handler of that evaluator then scores them against the split's labels, in any format
  the data layer reads (NIfTI, h5, npz).

Both return the summary of :func:`mgrad.metrics.summarize` and write ``metrics.csv`` and ``metrics.json``.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import FolderLayout
from monai.data.folder_layout import default_name_formatter

from mgrad import metrics
from mgrad.bundle import config_names, config_value, default_bundle_root, load_workflow
from mgrad.data.loading import load_pair
from mgrad.data.volumes import check_unique_names
from mgrad.errors import unknown_options
from mgrad.postprocess import choose_rules_for_files, load_rules, postprocess_file, save_rules
from mgrad.visualize import overlay_figure

__all__ = ["SegmentationReport", "evaluate", "evaluate_folders", "prediction_file", "score_pairs"]

FOLDER_OPTIONS = ("pred_dir", "label_dir", "num_classes", "class_names", "protocol", "output_dir")
PRED_SUFFIXES = ("_seg", "_pred", "_prediction")
LABEL_SUFFIXES = ("_gt", "_label", "_labels", "_seg")
PROBABILITY_SUFFIX = "_prob"  # probability maps that `infer --probabilities true` writes beside the labels


def prediction_file(image: str | os.PathLike, layout: FolderLayout) -> Path:
    """Where ``SaveImaged(folder_layout=layout)`` writes the prediction of ``image``.

    Args:
        image: the input volume's file.
        layout: the ``FolderLayout`` of the ``SaveImaged`` transform.

    Returns:
        the prediction's path.

    Example:
        >>> prediction_file("/data/case_000.nii.gz", FolderLayout("/out", "seg", ".nii.gz")).name
        'case_000_seg.nii.gz'
    """
    return Path(layout.filename(**default_name_formatter({"filename_or_obj": str(image)}, None)))


def score_pairs(
    pairs: Mapping[str, Mapping[str, Any]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    label_map: Mapping[int, int] | None = None,
    protocol: str = "default",
    output_dir: str | os.PathLike | None = None,
    figures: bool = False,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Score each case's prediction against its label; a case that cannot be scored is reported, the others go on.

    Args:
        pairs: ``{case: {"pred": file, "label": file, "image": file (optional, for figures)}}``.
        num_classes: number of classes including the background.
        class_names: names of classes ``1 .. num_classes - 1`` (a first background name is dropped).
        label_map: ``{raw label value: class}`` applied to the labels (unlisted values -> 0).
        protocol: ``"default"`` or ``"transunet"`` (see :mod:`mgrad.metrics`).
        output_dir: where ``metrics.csv``, ``metrics.json`` (and ``figures/CASE.png``) go; ``None``: nowhere.
        figures: write a PNG per case (slices with ground truth and prediction overlaid).
        errors: ``{case: message}`` of cases known to have failed before scoring.

    Returns:
        the summary of :func:`mgrad.metrics.summarize`, plus ``files``: the pair scored for each case. Its
        ``distance_unit`` is ``"vox"`` under the ``transunet`` protocol and where no label file stores its spacing
        (``.h5``, ``.npz``), else ``"mm"``.
    """
    if class_names is not None and len(class_names) == num_classes:
        class_names = list(class_names)[1:]
    names = list(class_names) if class_names else [str(c) for c in range(1, num_classes)]
    cases: dict[str, Any] = {}
    errors = dict(errors or {})
    in_mm = False  # whether any label file stored its spacing: distances in mm, else in voxels
    for case, files in pairs.items():
        if case in errors:
            continue
        try:
            pair = load_pair(files["pred"], files["label"], label_map, files.get("image"))
            spacing = pair.spacing if pair.spacing_known else None
            cases[case] = metrics.case_metrics(_on_gpu(pair.pred), _on_gpu(pair.label), num_classes, spacing, protocol)
            in_mm = in_mm or pair.spacing_known
            if output_dir is not None and figures and pair.image is not None:
                path = Path(output_dir) / "figures" / f"{case}.png"
                overlay_figure(pair.image, pair.label, pair.pred, path, names, f"{case}: ground truth and prediction")
        except Exception as e:  # noqa: BLE001 - one bad case is reported, the others are scored
            errors[case] = str(e)
    unit = "mm" if in_mm and protocol != "transunet" else "vox"
    summary = metrics.summarize(cases, class_names, protocol, dict(sorted(errors.items())), unit)
    summary["files"] = {case: {k: str(v) for k, v in files.items()} for case, files in pairs.items()}
    if output_dir is not None:
        metrics.write_report(summary, output_dir)
    return summary


def _on_gpu(volume: np.ndarray) -> np.ndarray | torch.Tensor:
    """On CUDA the metrics run on GPU tensors (:func:`mgrad.metrics.case_metrics` picks its GPU path for them)."""
    return torch.as_tensor(volume, device="cuda") if torch.cuda.is_available() else volume


def evaluate_folders(
    pred_dir: str | os.PathLike | Sequence[str | os.PathLike],
    label_dir: str | os.PathLike | Sequence[str | os.PathLike],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    protocol: str = "default",
    output_dir: str | os.PathLike | None = None,
    label_map: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Score NIfTI predictions against NIfTI labels (folders, searched recursively, or lists of files).

    Files pair up by case name: the file name without ``.nii``/``.nii.gz`` and without a trailing ``_seg``,
    ``_pred``, ``_prediction`` (predictions) or ``_gt``, ``_label``, ``_labels``, ``_seg`` (labels); where several
    files share a name, the suffixed one wins (so ACDC's ``X.nii.gz`` image beside ``X_gt.nii.gz`` is skipped).
    A case without a partner, or that cannot be read or matched in grid, is reported as an error.
    Probability maps (``*_prob.nii.gz``, from ``infer --probabilities true``) among the predictions are skipped.

    Args:
        pred_dir: folder of predictions (or a list of files).
        label_dir: folder of labels (or a list of files).
        num_classes: number of classes including the background.
        class_names: names of classes ``1 .. num_classes - 1``.
        protocol: ``"default"`` or ``"transunet"``.
        output_dir: where the report goes; ``None``: nowhere.
        label_map: ``{raw label value: class}`` applied to the labels.

    Returns:
        the summary (see :func:`score_pairs`).

    Raises:
        FileNotFoundError: where ``pred_dir`` or ``label_dir`` is a path but not a folder.
    """
    preds, pred_errors = _index(pred_dir, PRED_SUFFIXES, skip=PROBABILITY_SUFFIX)
    labels, errors = _index(label_dir, LABEL_SUFFIXES)
    errors.update(pred_errors)
    errors.update({case: f"no label for prediction {preds[case]}" for case in preds.keys() - labels.keys()})
    errors.update({case: f"no prediction for label {labels[case]}" for case in labels.keys() - preds.keys()})
    pairs = {case: {"pred": preds[case], "label": labels[case]} for case in sorted(preds.keys() & labels.keys())}
    return score_pairs(pairs, num_classes, class_names, label_map, protocol, output_dir, errors=errors)


def _index(
    source: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Sequence[str], skip: str | None = None
) -> tuple[dict, dict]:
    """{case name: file} for a folder (recursive) or a list of NIfTI files, and {case name: error} for ambiguities;
    files whose name ends with ``skip`` (before the extension) are left out."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise FileNotFoundError(f"not a folder: {source}")
        paths = sorted(p for p in Path(source).rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    else:
        paths = [Path(p) for p in source]
    groups: dict[str, list[tuple[bool, Path]]] = {}
    for path in paths:
        name = path.name.removesuffix(".gz").removesuffix(".nii")
        if skip and name.endswith(skip):
            continue
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


class SegmentationReport:
    """Handler of the bundle's evaluation: when the evaluator completes, scores the prediction it wrote for each
    item of ``datalist`` against the item's label and writes the report (:func:`score_pairs`).

    Items whose predictions would overwrite each other are refused on construction, before anything is written
    (:func:`mgrad.data.volumes.check_unique_names`), and so is a model of other classes than the labels'
    (``label_classes``). A case the evaluator could not segment is reported with the evaluator's message. The
    summary is kept in ``summary`` and in ``engine.state.metric_details["report"]``.

    Args:
        datalist: the items segmented (``{"image", "label", "case" (optional)}``).
        prediction_layout: the ``FolderLayout`` the evaluator's ``SaveImaged`` writes with.
        num_classes, class_names, label_map, protocol, output_dir, figures: as for :func:`score_pairs`.
        label_classes: the classes the dataset's labels hold, background included (``None``: not known).

    Example:
        In a bundle config, beside the evaluator's other handlers::

            {"_target_": "mgrad.evaluation.SegmentationReport", "datalist": "@datalist",
             "prediction_layout": "@prediction_layout", "num_classes": "@num_classes", "output_dir": "@output_dir"}
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        prediction_layout: FolderLayout,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        label_map: Mapping[int, int] | None = None,
        protocol: str = "default",
        output_dir: str | os.PathLike | None = None,
        figures: bool = True,
        label_classes: int | None = None,
    ) -> None:
        check_unique_names(datalist, "the datalist to evaluate")
        if label_classes is not None and label_classes != num_classes:
            raise ValueError(
                f"the model segments {num_classes} classes (background included; its models/model.json or "
                f"--num_classes), the labels of the dataset to evaluate hold {label_classes}: score it on a dataset "
                "of its classes"
            )
        self.datalist, self.layout = datalist, prediction_layout
        self.num_classes, self.class_names, self.label_map = num_classes, class_names, label_map
        self.protocol, self.output_dir, self.figures = protocol, output_dir, figures
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        failures = getattr(engine.state, "failures", [])
        pairs, errors = {}, {}
        for item in self.datalist:
            case = str(item.get("case") or prediction_file(item["image"], FolderLayout("", "")).name)
            pred = prediction_file(item["image"], self.layout)
            pairs[case] = {"pred": pred, "label": item["label"], "image": item["image"]}
            if not pred.is_file():
                failed = [f for f in failures if str(item["image"]) in f]
                errors[case] = failed[0] if failed else f"no prediction {pred} for {item['image']}"
        self.summary = score_pairs(
            pairs,
            self.num_classes,
            self.class_names,
            self.label_map,
            self.protocol,
            self.output_dir,
            self.figures,
            errors,
        )
        engine.state.metric_details["report"] = self.summary


def evaluate(
    pred_dir: str | None = None,
    label_dir: str | None = None,
    num_classes: int | None = None,
    class_names: str | Sequence[str] | None = None,
    protocol: str = "default",
    output_dir: str | None = None,
    dataset: str | None = None,
    dataset_dir: str | None = None,
    split: str = "validation",
    folds: int | None = None,
    bundle_root: str | None = None,
    configs: Sequence[str] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """Per-case, per-organ Dice, HD95, IoU and ASD in 3D, of prediction folders or of a dataset split.

    ``protocol="transunet"`` reproduces the published evaluation rules (HD95 in voxels, the 1/0 rule for empty
    cases); the default reports empty cases explicitly.

    On a dataset split the bundle segments the volumes and the predictions are scored. On the validation split each
    class's connected-component post-processing is then chosen on them (:func:`mgrad.postprocess.choose_rules`):
    the rules go to ``<output_dir>/postprocessing.json`` (for ``mgrad infer --postprocess``), the post-processed
    predictions to ``<output_dir>/postprocessed/`` with their own report. Any other split (``test``) never
    chooses: the rules chosen on the validation split (the bundle's ``eval/postprocessing.json``), where they are
    there, are applied to its predictions and scored the same way, so a test score is never tuned on the test
    cases. With ``folds`` every fold's model (``models/fold{k}/model.pt``) segments its held-out patients
    (``<output_dir>/fold{k}/``), the folds make the cross-validation table, and the rules are chosen on all
    held-out cases together. With ``--postprocess FILE`` the predictions are post-processed with those rules
    already, and no other rules are chosen or applied.

    Args:
        pred_dir, label_dir, num_classes: the folder way in (see :func:`evaluate_folders`).
        class_names: names of classes ``1 .. N-1`` (a list or one comma-separated string); folders only.
        protocol: ``"default"`` or ``"transunet"``.
        output_dir: where the report goes (default: ``pred_dir``, or for a split the configs' ``output_dir``: the
            bundle's ``eval/``, ``eval/basicunet`` with ``configs=["baseline_basicunet"]``; a split other than
            ``validation`` in a folder of its name there, ``eval/test``, so it never replaces the validation's
            report and rules).
        dataset, dataset_dir, split: the dataset way in: the bundle segments the split with its trained model.
        folds: the number of cross-validation folds trained with ``mgrad train --folds``; dataset way in only.
        bundle_root: the bundle folder (dataset way in).
        configs: more bundle configs layered on top (e.g. ``baseline_basicunet``).
        overrides: other bundle ids (``preset``, ``ckpt_path``, ``tta``, ``postprocess``, ``device``, ...).

    Returns:
        the summary of :func:`mgrad.metrics.summarize` (with folds: of all held-out cases pooled); cases that failed
        are in its ``errors``. A dataset split adds ``postprocessing`` (``{"path", "rules", "dice"}``) and
        ``postprocessed`` (the summary with the rules applied; ``postprocessing["chosen_on"]`` names the split
        that chose them); with folds, ``cross_validation`` (:func:`mgrad.crossval.cross_validation`).

    Raises:
        ValueError: where neither way in is complete, or options of the other way in are given.
    """
    if dataset is None:
        if pred_dir is None or label_dir is None or num_classes is None:
            raise ValueError("evaluate needs --pred_dir, --label_dir and --num_classes, or --dataset and --dataset_dir")
        error = unknown_options(overrides, FOLDER_OPTIONS, "an option of evaluate --pred_dir")
        if error:
            raise error
        if configs or bundle_root is not None or dataset_dir is not None or folds is not None:
            raise ValueError(
                "--configs, --bundle_root, --dataset_dir and --folds go with --dataset, not with --pred_dir"
            )
        if isinstance(class_names, str):
            class_names = [name.strip() for name in class_names.split(",")]
        out = output_dir if output_dir is not None else pred_dir
        return evaluate_folders(pred_dir, label_dir, num_classes, class_names, protocol, out)
    root = Path(bundle_root) if bundle_root else default_bundle_root()
    if dataset_dir is not None:
        overrides["dataset_dir"] = dataset_dir
    names = ["inference", "evaluate", *config_names(configs)]
    eval_dir = Path(config_value(names, "output_dir", root))
    out = Path(output_dir) if output_dir else eval_dir if split == "validation" else eval_dir / split
    settings = dict(dataset=dataset, split=split, protocol=protocol, **overrides)
    if folds is None:
        workflow = _segment_and_score(names, root, out, settings)
        summary = workflow.parser.get_parsed_content("report").summary
    else:
        if split != "validation":
            raise ValueError(f"--folds scores each fold's held-out patients (split 'validation'), not '{split}'")
        from mgrad.crossval import cross_validation

        fold_summaries = []
        for k in range(int(folds)):
            workflow = _segment_and_score(names, root, out / f"fold{k}", {**settings, "folds": int(folds), "fold": k})
            fold_summaries.append(workflow.parser.get_parsed_content("report").summary)
        table = cross_validation(fold_summaries)
        files = {f"fold{k}/{c}": f for k, s in enumerate(fold_summaries) for c, f in s["files"].items()}
        summary = {**table["pooled"], "files": files, "cross_validation": table}
    if overrides.get("postprocess") is not None:
        return summary
    if split == "validation":
        rules, dice = _choose_rules(summary, workflow.parser)
        path = out / "postprocessing.json"
        if rules is not None:
            save_rules(path, rules, dice={str(c): d for c, d in dice.items()})
    else:
        path = eval_dir / "postprocessing.json"
        rules, dice = (load_rules(path), None) if path.is_file() else (None, None)
    if rules is not None:
        after = _postprocess_and_score(summary, rules, workflow.parser, out)
        summary["postprocessing"] = {"path": str(path), "rules": rules, "dice": dice, "chosen_on": "validation"}
        summary["postprocessed"] = after
    return summary


def _segment_and_score(names: Sequence[str], root: Path, out: Path, settings: Mapping[str, Any]):
    """The bundle's evaluation workflow, run: the split segmented into ``out/predictions`` and scored in ``out``."""
    workflow = load_workflow(names, root, output_dir=str(out), **settings)
    workflow.parser.get_parsed_content("evaluator").run()
    return workflow


def _scored_pairs(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The prediction and label files of the cases of ``summary`` that were scored (not failed)."""
    errors = summary.get("errors", {})
    return {case: files for case, files in summary["files"].items() if case not in errors}


def _choose_rules(summary: Mapping[str, Any], parser: Any) -> tuple[dict[int, dict[str, Any]] | None, Any]:
    """Post-processing rules chosen on the scored predictions of ``summary``, and every candidate's Dice; ``None``
    rules where no case was scored."""
    pairs = _scored_pairs(summary)
    if not pairs:
        return None, None
    return choose_rules_for_files(
        [(f["pred"], f["label"]) for f in pairs.values()],
        parser.get_parsed_content("num_classes"),
        parser.get_parsed_content("label_map"),
    )


def _postprocess_and_score(
    summary: Mapping[str, Any], rules: Mapping[int, Mapping[str, Any]], parser: Any, out: Path
) -> dict[str, Any]:
    """The scored predictions of ``summary`` post-processed with ``rules`` into ``out/postprocessed/``, and their
    summary (scored there)."""
    processed = {}
    for case, files in _scored_pairs(summary).items():
        target = out / "postprocessed" / Path(files["pred"]).name
        postprocess_file(files["pred"], target, rules)
        processed[case] = {"pred": target, "label": files["label"]}
    return score_pairs(
        processed,
        parser.get_parsed_content("num_classes"),
        parser.get_parsed_content("class_names"),
        parser.get_parsed_content("label_map"),
        parser.get_parsed_content("protocol"),
        out / "postprocessed",
    )
