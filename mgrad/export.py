"""``python -m mgrad export-bundle``: the bundle as a zip that ``monai.bundle download`` and MONAI Label take."""

import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mgrad
from mgrad.bundle import default_bundle_root
from mgrad.bundle_metadata import exported_metadata, large_files_yaml, md5sum
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
    package = Path(mgrad.__file__).resolve().parent
    for f in sorted(package.rglob("*.py")):
        yield f, f"{name}/mgrad/{f.relative_to(package).as_posix()}"
    for part in PACKAGING:
        if (package.parent / part).is_file():
            yield package.parent / part, f"{name}/{part}"


def _evaluate(root: Path, dataset: str, dataset_dir: str, split: str, protocol: str, overrides: dict) -> dict:
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

    The zip holds ``configs/``, ``docs/``, ``LICENSE``, ``models/model.pt`` (when trained and ``include_model``)
    and a copy of the ``mgrad`` package at its top level with its ``pyproject.toml``/``setup.cfg``:
    ``monai.bundle run`` puts the bundle folder on ``sys.path``, so the downloaded bundle imports mgrad from there,
    and ``pip install <bundle folder>`` installs it. ``configs/metadata.json`` is rewritten for the export:
    ``required_packages_version`` lists the installed PyPI packages mgrad needs, and, with a model, ``eval_metrics``
    holds the scores of ``mgrad evaluate`` on split ``eval_split`` of ``eval_dataset`` (in ``eval_dataset_dir``,
    under ``eval_protocol``) run on the packaged weights now, named in ``eval_protocol`` (the full report goes to
    ``eval/metrics.json``); without ``eval_dataset`` no score is claimed. ``large_files.yml`` gives the weights' md5
    and ``weights_url`` (empty: the zip carries them). ``overrides`` (e.g. ``--preset``) go to the evaluation.
    The zip is written to a temporary name and renamed. Returns the path written.
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_root()
    if not (root / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{root}: not a bundle folder (no configs/metadata.json)")
    model = root / "models" / "model.pt"
    with_model = include_model and model.is_file()
    if overrides and (eval_dataset is None or not with_model):
        raise ValueError(f"options {sorted(overrides)} go to the evaluation: pass --eval_dataset with a trained model")
    report, evaluation = None, None
    if with_model and eval_dataset is not None:
        report = _evaluate(root, eval_dataset, eval_dataset_dir, eval_split, eval_protocol, overrides)
        evaluation = {"dataset": eval_dataset, "split": eval_split, "model_md5": md5sum(model)}
    metadata = exported_metadata(json.loads((root / "configs" / "metadata.json").read_text()), report, evaluation)
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in _bundle_files(root, name, include_model):
                archive.write(path, arcname)
            archive.writestr(f"{name}/configs/metadata.json", json.dumps(metadata, indent=4) + "\n")
            if with_model:
                urls = {"models/model.pt": weights_url}
                archive.writestr(f"{name}/large_files.yml", large_files_yaml({"models/model.pt": model}, urls))
            if report is not None:
                archive.writestr(f"{name}/eval/metrics.json", json.dumps(report, indent=2) + "\n")
    return str(output)
