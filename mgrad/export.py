"""``python -m mgrad export-bundle``: the bundle as a zip that ``monai.bundle download`` and MONAI Label take."""

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import mgrad
from mgrad.bundle import STANDALONE_CONFIGS, default_bundle_root, standalone_config
from mgrad.writers import atomic_path

__all__ = ["export_bundle", "BUNDLE_NAME"]

BUNDLE_NAME = "mgrad_unet"
BUNDLE_PARTS = ("configs", "docs", "LICENSE", "large_files.yml")


def _bundle_files(bundle_root: Path, name: str, include_model: bool) -> Iterator[tuple[Path, str]]:
    for part in BUNDLE_PARTS:
        path = bundle_root / part
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            yield f, f"{name}/{f.relative_to(bundle_root).as_posix()}"
    model = bundle_root / "models" / "model.pt"
    if include_model and model.is_file():
        yield model, f"{name}/models/model.pt"
    package = Path(mgrad.__file__).resolve().parent
    for f in sorted(package.rglob("*.py")):
        yield f, f"{name}/mgrad/{f.relative_to(package).as_posix()}"


def export_bundle(
    output: str = f"{BUNDLE_NAME}.zip",
    bundle_root: str | None = None,
    name: str = BUNDLE_NAME,
    include_model: bool = True,
) -> str:
    """Write the bundle to the zip ``output``, all under the top folder ``name``.

    The zip holds ``configs/`` (with ``train.json`` and ``inference.json`` each merged with ``common.json``, so
    that MONAI Label and ``monai.bundle run --config_file configs/inference.json`` read them alone), ``docs/``,
    ``LICENSE``, ``models/model.pt`` (when trained and ``include_model``)
    and a copy of the ``mgrad`` package at its top level: ``monai.bundle run`` puts the bundle folder on
    ``sys.path``, so the downloaded bundle imports mgrad from there where mgrad is not installed. The zip is written
    to a temporary name and renamed.

    Args:
        output: the zip file to write.
        bundle_root: the bundle folder; default :func:`mgrad.bundle.default_bundle_root`.
        name: the bundle's name, the zip's top folder.
        include_model: ship ``models/model.pt`` where there is one.

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
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            standalone = {f"{name}/configs/{config}.json" for config in STANDALONE_CONFIGS}
            for path, arcname in _bundle_files(root, name, include_model):
                if arcname not in standalone:
                    archive.write(path, arcname)
            for config in STANDALONE_CONFIGS:
                text = json.dumps(standalone_config(root, config), indent=4) + "\n"
                archive.writestr(f"{name}/configs/{config}.json", text)
    return str(output)
