"""Metadata of an exported bundle that says what it holds: installable packages, the weights' file and hash, and
the scores of the evaluation that the packaged weights went through."""

import hashlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import mgrad

__all__ = ["EVAL_METRICS", "eval_metrics", "exported_metadata", "large_files_yaml", "md5sum", "package_requirements"]

# metrics.json's "mean" entries -> the eval_metrics names model-zoo bundles use
EVAL_METRICS = {"dice": "mean_dice", "hd95": "mean_hd95", "iou": "mean_iou", "asd": "mean_asd"}
# recorded in their own metadata fields (monai_version, pytorch_version, numpy_version)
OWN_FIELDS = {"monai", "torch", "numpy"}
INSTALL_NOTE = (
    "The mgrad package (version {version}) is carried by the bundle (mgrad/ at its top level, with pyproject.toml "
    "and setup.cfg): `python -m monai.bundle run` started in the bundle folder imports it from there, and `pip "
    "install <bundle folder>` installs it with its dependencies. The packages of required_packages_version come "
    "from PyPI."
)


def md5sum(path: str | Path) -> str:
    """The md5 hex digest of a file (the hash ``monai.bundle download_large_files`` checks by default)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_requirements() -> dict[str, str]:
    """The installed version of each package mgrad requires (PyPI names), except monai, torch and numpy."""
    versions = {}
    for requirement in importlib.metadata.requires("mgrad") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        if name.lower() not in OWN_FIELDS:
            versions[name] = importlib.metadata.version(name)
    return versions


def eval_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``{"mean_dice": ..., "mean_hd95": ..., "mean_iou": ..., "mean_asd": ...}`` from an evaluation report
    (``metrics.json`` of ``mgrad evaluate``), the metrics it has, as floats."""
    means = report.get("mean", {})
    return {name: float(means[key]) for key, name in EVAL_METRICS.items() if key in means}


def exported_metadata(
    metadata: dict[str, Any], report: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``metadata`` for an exported bundle: ``required_packages_version`` from the installed packages (mgrad itself
    travels in the bundle, as ``mgrad_installation`` says), and, given an evaluation ``report``, its
    ``eval_metrics`` and ``eval_protocol`` (``evaluation``: dataset, split, protocol, the weights' md5)."""
    meta = dict(metadata)
    meta["required_packages_version"] = package_requirements()
    meta["mgrad_installation"] = INSTALL_NOTE.format(version=mgrad.__version__)
    meta.pop("eval_metrics", None)
    meta.pop("eval_protocol", None)
    if report is not None:
        meta["eval_metrics"] = eval_metrics(report)
        context = {"protocol": report.get("protocol"), "num_cases": report.get("num_cases")}
        meta["eval_protocol"] = {**(evaluation or {}), **context}
    return meta


def large_files_yaml(files: dict[str, Path], urls: dict[str, str] | None = None) -> str:
    """``large_files.yml`` text for ``monai.bundle download_large_files``: each bundle path with its url (empty
    where the file is not hosted anywhere yet: the bundle itself carries it) and md5."""
    lines = ["large_files:"]
    for name, path in files.items():
        url = (urls or {}).get(name, "")
        lines += [f'  - path: "{name}"', f'    url: "{url}"', f'    hash_val: "{md5sum(path)}"', '    hash_type: "md5"']
    return "\n".join(lines) + "\n"
