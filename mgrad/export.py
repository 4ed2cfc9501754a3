"""``python -m mgrad export-bundle``: the bundle as a zip that ``monai.bundle download`` and MONAI Label take."""

import inspect
import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mgrad
from mgrad.bundle import STANDALONE_CONFIGS, default_bundle_root, standalone_config
from mgrad.bundle_metadata import exported_metadata, large_files_yaml, md5sum
from mgrad.errors import unknown_options
from mgrad.model_settings import settings_path
from mgrad.writers import atomic_path

__all__ = ["export_bundle", "BUNDLE_NAME"]

BUNDLE_NAME = "mgrad_unet"
BUNDLE_PARTS = ("configs", "docs", "LICENSE")
GENERATED = ("configs/metadata.json", "large_files.yml")  # written for the export, not copied
PACKAGING = ("pyproject.toml", "setup.cfg", "README.md")  # so that ``pip install <bundle folder>`` installs mgrad


def _bundle_files(bundle_root: Path, name: str, include_model: bool) -> Iterator[tuple[Path, str]]:
    for part in BUNDLE_PARTS:
        path = bundle_root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            relative = f.relative_to(bundle_root).as_posix()
            if relative not in GENERATED:
                yield f, f"{name}/{relative}"
    model = bundle_root / "models" / "model.pt"
    if include_model and model.is_file():
        yield model, f"{name}/models/model.pt"
        if settings_path(model).is_file():  # the classes and intensity the inference config reads
            yield settings_path(model), f"{name}/models/{settings_path(model).name}"
    package = Path(mgrad.__file__).resolve().parent
    for f in sorted(package.rglob("*.py")):
        yield f, f"{name}/mgrad/{f.relative_to(package).as_posix()}"
    for part in PACKAGING:
        if (package.parent / part).is_file():
            yield package.parent / part, f"{name}/{part}"


def _evaluate(root: Path, dataset: str, dataset_dir: str | None, split: str, protocol: str, overrides: dict) -> dict:
    """The report of ``mgrad evaluate`` on a dataset split with the bundle's trained model."""
    from mgrad.evaluation import evaluate

    with tempfile.TemporaryDirectory() as out:
        return evaluate(
            dataset=dataset,
            dataset_dir=dataset_dir,
            split=split,
            protocol=protocol,
            output_dir=out,
            bundle_root=str(root),
            **overrides,
        )


def export_bundle(
    output: str = f"{BUNDLE_NAME}.zip",
    bundle_root: str | None = None,
    name: str = BUNDLE_NAME,
    include_model: bool = True,
    eval_dataset: str | None = None,
    eval_dataset_dir: str | None = None,
    eval_split: str = "validation",
    eval_protocol: str = "default",
    weights_url: str = "",
    **overrides: Any,
) -> str:
    """Write the bundle to the zip ``output``, all under the top folder ``name``.

    The zip holds ``configs/`` (with ``train.json`` and ``inference.json`` each merged with ``common.json``, so
    that MONAI Label and ``monai.bundle run --config_file configs/inference.json`` read them alone), ``docs/``,
    ``LICENSE``, ``models/model.pt`` (when trained and ``include_model``; with ``models/model.json``, the settings
    it was trained with) and a copy of the ``mgrad`` package at its top level, so that ``monai.bundle run`` started
    in the bundle folder imports mgrad from there where mgrad is not installed (from elsewhere, the folder goes on
    ``PYTHONPATH``: MONAI adds it to ``sys.path`` only after the configs' imports). The zip is written to a
    temporary name and renamed. With ``pyproject.toml``/``setup.cfg`` beside the package, ``pip
    install <bundle folder>`` installs it too.

    ``configs/metadata.json`` is rewritten for the export: ``required_packages_version`` lists the installed PyPI
    packages mgrad needs (mgrad itself travels in the zip, as ``mgrad_installation`` says), and, with a model,
    ``eval_metrics`` holds the scores of ``mgrad evaluate`` run now on the packaged weights (split ``eval_split`` of
    ``eval_dataset`` in ``eval_dataset_dir``, ``eval_protocol``), all named in ``eval_protocol`` with the weights'
    md5; the full report goes to ``eval/metrics.json``. Without ``eval_dataset`` no score is claimed.
    ``large_files.yml`` lists ``models/model.pt`` with its md5 and ``weights_url``.

    Args:
        output: the zip file to write.
        bundle_root: the bundle folder; default :func:`mgrad.bundle.default_bundle_root`.
        name: the bundle's name, the zip's top folder.
        include_model: ship ``models/model.pt`` where there is one.
        eval_dataset: the dataset to evaluate the packaged model on (``None``: no ``eval_metrics``).
        eval_dataset_dir: its folder.
        eval_split: its split.
        eval_protocol: the evaluation protocol (``default`` or ``transunet``).
        weights_url: where ``models/model.pt`` is hosted, for ``large_files.yml`` (empty: the zip carries it).
        overrides: bundle ids for the evaluation (e.g. ``preset``, ``device``).

    Returns:
        the path written.

    Raises:
        FileNotFoundError: where ``bundle_root`` holds no ``configs/metadata.json``.

    Example:
        >>> export_bundle("mgrad_unet.zip", bundle_root="bundle")  # doctest: +SKIP
        'mgrad_unet.zip'
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    if not (root / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{root}: not a bundle folder (no configs/metadata.json)")
    model = root / "models" / "model.pt"
    with_model = include_model and model.is_file()
    if overrides and (eval_dataset is None or not with_model):
        arguments = [name for name in inspect.signature(export_bundle).parameters if name != "overrides"]
        what = "an argument of this command (bundle ids go to the evaluation: --eval_dataset, with a trained model)"
        raise unknown_options(overrides, arguments, what)
    report, evaluation = None, None
    if with_model and eval_dataset is not None:
        report = _evaluate(root, eval_dataset, eval_dataset_dir, eval_split, eval_protocol, overrides)
        evaluation = {"dataset": eval_dataset, "split": eval_split, "model_md5": md5sum(model)}
    metadata = exported_metadata(json.loads((root / "configs" / "metadata.json").read_text()), report, evaluation)
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            standalone = {f"{name}/configs/{config}.json" for config in STANDALONE_CONFIGS}
            for path, arcname in _bundle_files(root, name, include_model):
                if arcname not in standalone:
                    archive.write(path, arcname)
            for config in STANDALONE_CONFIGS:
                text = json.dumps(standalone_config(root, config), indent=4) + "\n"
                archive.writestr(f"{name}/configs/{config}.json", text)
            archive.writestr(f"{name}/configs/metadata.json", json.dumps(metadata, indent=4) + "\n")
            if with_model:
                urls = {"models/model.pt": weights_url}
                archive.writestr(f"{name}/large_files.yml", large_files_yaml({"models/model.pt": model}, urls))
            if report is not None:
                archive.writestr(f"{name}/eval/metrics.json", json.dumps(report, indent=2) + "\n")
    return str(output)
