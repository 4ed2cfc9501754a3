"""Running the MONAI bundle from Python and from ``python -m mgrad``: a thin front over MONAI's ``ConfigWorkflow``.

Every run reads ``configs/common.json`` (dataset ids, size presets, network, inferer) first, then the configs it
names (``train``, ``inference``, ``evaluate``, ...) in order, as ``monai.bundle run --config_file "[...]"`` merges
them. An override must name an id of the merged configs: a mistyped one is an error listing the closest ids.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS
from monai.data.folder_layout import default_name_formatter

from mgrad.errors import unknown_options

__all__ = [
    "COMMON_CONFIG",
    "STANDALONE_CONFIGS",
    "bundle_configs",
    "check_overrides",
    "check_switches",
    "checkpoint_paths",
    "config_names",
    "config_value",
    "default_bundle_root",
    "infer",
    "load_workflow",
    "merged_config",
    "split_overrides",
    "standalone_config",
    "run_config",
    "train",
]

COMMON_CONFIG = "common"
STANDALONE_CONFIGS = ("train", "inference")  # the configs that readers of a single file (MONAI Label) take by name


def default_bundle_root() -> Path:
    """``$MGRAD_BUNDLE``, else the ``bundle/`` folder of the repository this package was installed from."""
    env = os.environ.get("MGRAD_BUNDLE")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "bundle"


def bundle_configs(bundle_root: str | Path, names: Sequence[str]) -> list[str]:
    """Paths of ``configs/common.json`` and ``configs/<name>.json`` for each of ``names``, in that order.

    Args:
        bundle_root: the bundle folder (holding ``configs/``).
        names: config names without ``.json``; ``common`` is prepended unless listed.

    Returns:
        the config file paths, ready for ``monai.bundle run --config_file``.

    Raises:
        FileNotFoundError: naming a config that is not in the bundle.

    Example:
        >>> bundle_configs("bundle", ["train"])  # doctest: +SKIP
        ['bundle/configs/common.json', 'bundle/configs/train.json']
    """
    names = [COMMON_CONFIG, *(n for n in names if n != COMMON_CONFIG)]
    paths = [Path(bundle_root) / "configs" / f"{name}.json" for name in names]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: pass --bundle_root pointing at the mgrad bundle (a folder with configs/)."
            )
    return [str(p) for p in paths]


def standalone_config(bundle_root: str | Path, name: str) -> dict[str, Any]:
    """``common.json`` and ``<name>.json`` merged into one config, for readers of a single file (MONAI Label reads
    ``train.json`` and ``inference.json`` alone); :func:`mgrad.export.export_bundle` ships these.

    Args:
        bundle_root: the bundle folder.
        name: the config name without ``.json``.

    Returns:
        the merged config, as ``json.dump`` writes it.
    """
    return ConfigParser.load_config_files(bundle_configs(bundle_root, [name]))


def check_switches(**switches: Any) -> None:
    """Raise ``ValueError`` for a switch that arrived as the text ``"true"``, ``"false"``, ``"none"`` or ``"null"``.

    ``python -m monai.bundle run --amp false`` passes ``"false"`` on as a string, which every config expression reads
    as true: the run would silently do the opposite of what was asked. The bundle's ``initialize`` lists call this
    with their on/off ids (``python -m mgrad`` reads such values as Python's and never trips it).

    Example:
        >>> check_switches(amp=False, compile="false")
        Traceback (most recent call last):
        ValueError: --compile 'false' arrived as text, which reads as true: ...
    """
    for name, value in switches.items():
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "none", "null"):
            raise ValueError(
                f"--{name} {value!r} arrived as text, which reads as true: `python -m monai.bundle run` passes a "
                f"lowercase true/false/null on as a string. Write --{name} True, False or None there "
                "(`python -m mgrad` takes either)."
            )


def config_names(configs: str | Sequence[str]) -> list[str]:
    """A config name or a list of them (fire passes one ``--configs NAME`` as a string)."""
    return [configs] if isinstance(configs, str) else list(configs)


def check_overrides(parser: ConfigParser, overrides: Sequence[str]) -> None:
    """Raise :class:`mgrad.errors.UnknownOptionError` for an override id that names nothing in the configs.

    Args:
        parser: the configs of the run, merged, before any override is applied.
        overrides: the override ids (``epochs``, ``train#dataloader#num_workers``, ...).

    Raises:
        UnknownOptionError: listing each unknown id with up to three close ids of the configs.

    Example:
        >>> check_overrides(ConfigParser({"epochs": 30}), ["epoch"])
        Traceback (most recent call last):
        ...
        mgrad.errors.UnknownOptionError: unknown option --epoch (did you mean --epochs?): not a bundle config id
    """
    split_overrides(dict.fromkeys(overrides), [parser])


def merged_config(names: Sequence[str], bundle_root: str | Path | None = None) -> ConfigParser:
    """``common.json`` and the named configs merged in order, unparsed and without overrides, as a run reads them.

    Args:
        names: config names without ``.json``.
        bundle_root: the bundle folder; default :func:`default_bundle_root`.

    Returns:
        a ``ConfigParser`` holding the merged config.

    Example:
        >>> merged_config(["train"])["epochs"]  # doctest: +SKIP
        "$300 if @preset == 'paper' else 30"
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    return ConfigParser(ConfigParser.load_config_files(bundle_configs(root, names)))


def config_value(names: Sequence[str], key: str, bundle_root: str | Path | None = None, **overrides: Any) -> Any:
    """The parsed value of config id ``key`` in ``common.json`` and the named configs merged, with ``overrides``
    set, as a run would see it; nothing is instantiated beyond what ``key`` refers to.

    Args:
        names: config names without ``.json``.
        key: the config id, e.g. ``output_dir`` or ``ckpt_path``.
        bundle_root: the bundle folder; default :func:`default_bundle_root`.
        overrides: config ids and their values.

    Returns:
        the value.

    Example:
        >>> config_value(["inference", "baseline_basicunet"], "output_dir", "bundle")  # doctest: +SKIP
        'bundle/eval/basicunet'
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    parser = merged_config(names, root)
    parser.update({"bundle_root": str(root), **overrides})
    return parser.get_parsed_content(key, lazy=False)


def split_overrides(overrides: Mapping[str, Any], parsers: Sequence[ConfigParser]) -> list[dict[str, Any]]:
    """Share ``overrides`` among several runs: each run gets those that name an id of its configs.

    For a command that runs several configs (training, then inference and evaluation) with one set of options.

    Args:
        overrides: config ids and their values.
        parsers: the configs of each run (:func:`merged_config`).

    Returns:
        one dict of overrides per parser, in order.

    Raises:
        UnknownOptionError: for ids that no run reads, with up to three close ids of any run.

    Example:
        >>> split_overrides({"epochs": 3, "protocol": "transunet"},
        ...                 [ConfigParser({"epochs": 30}), ConfigParser({"protocol": "default"})])
        [{'epochs': 3}, {'protocol': 'transunet'}]
    """
    unread = [key for key in overrides if not any(key in parser for parser in parsers)]
    error = unknown_options(unread, [i for parser in parsers for i in _ids(parser.get())], "a bundle config id")
    if error:
        raise error
    return [{key: value for key, value in overrides.items() if key in parser} for parser in parsers]


def _ids(config: Any, prefix: str = "") -> list[str]:
    """Every id of a config: the top-level keys and, below them, ``a#b`` paths into dicts."""
    ids = []
    if isinstance(config, dict):
        for key, value in config.items():
            name = f"{prefix}{key}"
            ids.append(name)
            if not str(key).startswith("_"):
                ids += _ids(value, f"{name}#")
    return ids


def run_config(
    names: Sequence[str],
    bundle_root: str | Path | None = None,
    run_id: str = "run",
    tracking: str | None = None,
    **overrides: Any,
) -> ConfigWorkflow:
    """Run ``run_id`` of the bundle's ``common.json`` + ``configs/<name>.json`` files, merged in order.

    A plain ``device`` such as ``"cpu"`` or ``"cuda:1"`` becomes the ``torch.device`` the configs expect.

    Args:
        names: config names without ``.json`` (``["train"]``, ``["inference", "evaluate"]``, ...).
        bundle_root: the bundle folder; default :func:`default_bundle_root`.
        run_id: the config id of the expressions to run.
        tracking: MONAI's experiment tracking, as ``monai.bundle run --tracking``: ``"mlflow"`` or a settings file;
            its ids (``tracking_uri``, ``experiment_name``, ``run_name``, ...) are then valid overrides.
        overrides: config ids and their values; each must name an id of the merged configs.

    Returns:
        the finished workflow (its ``parser`` holds the parsed components, e.g. the evaluator and its state).

    Raises:
        UnknownOptionError: for an override that names no config id (nothing is run).
        FileNotFoundError: for a config that is not in the bundle.

    Example:
        >>> run_config(["train"], "bundle", epochs=1, device="cpu")  # doctest: +SKIP
    """
    workflow = load_workflow(names, bundle_root, run_id, tracking, **overrides)
    workflow.run()
    workflow.finalize()
    return workflow


def load_workflow(
    names: Sequence[str],
    bundle_root: str | Path | None = None,
    run_id: str = "run",
    tracking: str | None = None,
    **overrides: Any,
) -> ConfigWorkflow:
    """The initialized, not yet run, workflow of :func:`run_config` (same arguments and errors)."""
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    device = overrides.get("device")
    if isinstance(device, str) and not device.startswith("$"):
        overrides["device"] = f"$torch.device('{device}')"
    config_files = bundle_configs(root, names)
    tracking_ids = set(tracking_settings(tracking)["configs"]) if tracking else set()
    check_overrides(merged_config(names, root), [key for key in overrides if key not in tracking_ids])
    workflow = ConfigWorkflow(
        config_file=config_files,
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        run_id=run_id,
        bundle_root=str(root),
        tracking=tracking,
        **overrides,
    )
    workflow.initialize()
    return workflow


def tracking_settings(tracking: str) -> dict:
    """MONAI's experiment-tracking settings named by ``tracking``: a known name (``"mlflow"``) or a settings file."""
    if tracking in DEFAULT_EXP_MGMT_SETTINGS:
        return DEFAULT_EXP_MGMT_SETTINGS[tracking]
    return ConfigParser.load_config_files(tracking)


def train(
    bundle_root: str | None = None,
    multi_gpu: bool = False,
    configs: Sequence[str] = (),
    tracking: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train MGRAD-UNet with the bundle's ``train.json`` (plus ``multi_gpu_train.json`` under torchrun).

    Any bundle id can be overridden, e.g. ``--dataset acdc_h5 --dataset_dir DIR --epochs 50 --preset paper
    --time_budget 1800 --device cpu``; ``--configs NAME`` layers more of the bundle's configs on top (e.g.
    ``baseline_basicunet``: MONAI's BasicUNet through the identical pipeline). The best model goes to
    ``<bundle_root>/models/model.pt``. ``--folds K --fold k`` trains fold ``k`` of a ``K``-fold cross-validation of
    the training data, split by patient (``--seed``), with the split written to ``models/fold{k}/split.json`` and
    the models under ``models/fold{k}/``. ``--pretrained PATH`` starts from a checkpoint of another label set or
    channel count: every tensor that fits is loaded, and the log lists those left out.

    Args:
        bundle_root: the bundle folder; default :func:`default_bundle_root`.
        multi_gpu: add ``multi_gpu_train.json`` (run under ``torchrun``).
        configs: more bundle configs layered on top.
        tracking: ``"mlflow"`` (or a MONAI tracking settings file) records the run, its losses, its validation Dice
            and the best model with MLflow; ``--tracking_uri``, ``--experiment_name`` and ``--run_name`` set where
            and under which names (``pip install mgrad[tracking]``).
        overrides: config ids and their values.

    Returns:
        ``{"best_metric": best validation mean Dice, "best_metric_epoch": its epoch}``.
    """
    names = ["train", *config_names(configs), *(["multi_gpu_train"] if multi_gpu else [])]
    workflow = run_config(names, bundle_root, tracking=tracking, **overrides)
    state = workflow.parser.get_parsed_content("validate#evaluator").state
    return {"best_metric": state.best_metric, "best_metric_epoch": state.best_metric_epoch}


def checkpoint_paths(
    ckpt_path: str | Sequence[str] | None,
    folds: int | None = None,
    bundle_root: str | Path | None = None,
    configs: str | Sequence[str] = (),
) -> str | list[str] | None:
    """The checkpoint(s) of an inference: ``ckpt_path`` as given (a list, or one string of comma-separated paths,
    in brackets or not, gives an ensemble), or with ``folds`` the ``ckpt_path`` of each fold as the inference config
    (with ``configs`` layered on it) defines it: ``models/fold{k}/model.pt``, ``models/basicunet/fold{k}/model.pt``
    for the ``baseline_basicunet`` configs.

    Args:
        ckpt_path: one path, several, or ``None`` (the config's default).
        folds: the number of cross-validation folds whose models form the ensemble; not together with ``ckpt_path``.
        bundle_root: the bundle folder holding ``configs/`` and ``models/``; default :func:`default_bundle_root`.
        configs: the bundle configs layered on the inference config (they may keep their models elsewhere).

    Returns:
        one path, a list of paths, or ``None``.

    Raises:
        ValueError: for both ``ckpt_path`` and ``folds``, or fewer than one fold.

    Example:
        >>> checkpoint_paths("a.pt,b.pt"), checkpoint_paths("[a.pt,b.pt]")
        (['a.pt', 'b.pt'], ['a.pt', 'b.pt'])
        >>> checkpoint_paths(None, folds=2, bundle_root="bundle", configs="baseline_basicunet")  # doctest: +SKIP
        ['bundle/models/basicunet/fold0/model.pt', 'bundle/models/basicunet/fold1/model.pt']
    """
    if folds is not None:
        if ckpt_path is not None:
            raise ValueError("give --ckpt_path or --folds, not both")
        if int(folds) < 1:
            raise ValueError(f"--folds must be at least 1, got {folds}")
        names = ["inference", *config_names(configs)]
        return [str(config_value(names, "ckpt_path", bundle_root, folds=int(folds), fold=k)) for k in range(int(folds))]
    if isinstance(ckpt_path, str):
        text = ckpt_path.strip()
        text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        paths = [p.strip().strip("'\"") for p in text.split(",") if p.strip()]
        return paths[0] if len(paths) == 1 else paths
    return None if ckpt_path is None else [str(p) for p in ckpt_path]


def infer(
    input: str,
    output_dir: str,
    bundle_root: str | None = None,
    ckpt_path: str | Sequence[str] | None = None,
    folds: int | None = None,
    configs: Sequence[str] = (),
    **overrides: Any,
) -> list[str]:
    """Segment every volume in folder ``input`` (or one volume file, or a datalist ``.json``); write NIfTI predictions
    to ``output_dir``.

    Predictions have each input's shape, affine and orientation. ``ckpt_path`` defaults to the bundle's
    ``models/model.pt``; several checkpoints (``--ckpt_path "[a.pt,b.pt]"`` or ``--ckpt_path a.pt,b.pt``), or
    ``--folds K`` (the bundle's ``models/fold{k}/model.pt``), average their softmax probabilities. Other bundle ids
    can be overridden: ``--probabilities true`` (also write ``<input name>_prob.nii.gz``), ``--tta flip`` or
    ``rot90``, ``--postprocess postprocessing.json`` (rules written by ``mgrad evaluate``), ``--dataset``,
    ``--preset``, ``--fast false``; ``--configs NAME`` layers more of the bundle's configs on top, as for
    :func:`train`.

    Args:
        input: a folder of volumes (or of DICOM series folders), one volume file or DICOM series folder, or a
            datalist ``.json``.
        output_dir: where the predictions go (``<input name>_seg.nii.gz``).
        bundle_root: the bundle folder; default :func:`default_bundle_root`.
        ckpt_path: the weights, one path or several (an ensemble); default ``<bundle_root>/models/model.pt``.
        folds: ensemble the models of this many cross-validation folds (instead of ``ckpt_path``).
        configs: more bundle configs layered on top.
        overrides: config ids and their values.

    Returns:
        the prediction files written, one per input volume.

    Raises:
        mgrad.engines.CaseFailures: after the run, where some volumes failed (the others are still written).
    """
    ckpt_path = checkpoint_paths(ckpt_path, folds, bundle_root, configs)
    if ckpt_path is not None:
        overrides["ckpt_path"] = ckpt_path
    workflow = run_config(
        ["inference", *config_names(configs)], bundle_root, dataset_dir=input, output_dir=output_dir, **overrides
    )
    layout = workflow.parser.get_parsed_content("prediction_layout")
    items = workflow.parser.get_parsed_content("datalist")
    return [str(layout.filename(**default_name_formatter({"filename_or_obj": item["image"]}, None))) for item in items]
